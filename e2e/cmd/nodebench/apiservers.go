package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
)

// The apiservers a run may start beside the cluster's own, on its datastore.
const (
	// routedAPI is on both networks without an egress selector: it dials
	// kubelets (and would dial pods) itself, the baseline without the tunnel.
	routedAPI = "apiserver-direct"
	// relayAPI and perDialAPI reach the nodes through the gateway only, as
	// the cluster's apiserver does: relayAPI with the egress relay (streams
	// of one long-lived connection to the gateway, the default), perDialAPI
	// with a new mutual-TLS connection per dial (--egress-relay=false).
	// Both start fresh and serve the bench alone: the relay's A/B (-per-dial).
	relayAPI   = "apiserver-relay"
	perDialAPI = "apiserver-perdial"
)

// apiserverArgs are each added apiserver's own flags, and whether it is
// tunneled (kept off the edge network and unable to route there).
var apiserverArgs = map[string]struct {
	tunneled bool
	args     []string
}{
	routedAPI:  {false, nil},
	relayAPI:   {true, []string{"--egress-gateway", "https://tunnel-gateway:8131"}},
	perDialAPI: {true, []string{"--egress-gateway", "https://tunnel-gateway:8131", "--egress-relay=false"}},
}

// apiservers returns configs for the named apiservers, starting those not
// running yet (all at once, then waiting for each one's /readyz).
func (b *bench) apiservers(members ...string) ([]*rest.Config, error) {
	c := b.c
	ctx := context.Background()
	state := fmt.Sprintf("/data/state/apiserver:uid=%d,gid=%d,mode=0700", dockercluster.NonRoot, dockercluster.NonRoot)
	var started []string
	for _, m := range members {
		if b.apis[m] != nil || slices.Contains(started, m) {
			continue
		}
		spec := apiserverArgs[m]
		// a state directory of its own: the egress selector file and relay socket are per apiserver
		args := []string{"run", "-d", "--name", c.Name(m), "--label", "kubesplit.test=" + c.ID,
			"--network", c.Control, "-v", c.DataDir + ":/data", "--tmpfs", state, "kubesplit/apiserver:" + dockercluster.DefaultTag(),
			"--data-dir", "/data", "--datastore-endpoint", "https://datastore:2379", "--bind-address", "0.0.0.0", "--secure-port", "6443",
			// the same kubernetes Service endpoint as the cluster's apiserver (the gateway's relay)
			"--advertise-address", c.GatewayIP}
		if _, err := dockercluster.Docker(ctx, append(args, spec.args...)...); err != nil {
			return nil, err
		}
		if spec.tunneled {
			subnet, err := dockercluster.Docker(ctx, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", c.Edge)
			if err != nil {
				return nil, err
			}
			if out, err := c.InNetns(ctx, m, "ip", "route", "add", "unreachable", subnet); err != nil {
				return nil, fmt.Errorf("%v: %s", err, out)
			}
		} else if _, err := dockercluster.Docker(ctx, "network", "connect", c.Edge, c.Name(m)); err != nil {
			return nil, err
		}
		started = append(started, m)
	}
	for _, m := range started {
		cfg := rest.CopyConfig(c.Config)
		cfg.Host = "https://" + c.IP(m, c.Control) + ":6443"
		if err := waitReady(cfg, m); err != nil {
			return nil, err
		}
		b.apis[m] = cfg
	}
	var out []*rest.Config
	for _, m := range members {
		out = append(out, b.apis[m])
	}
	return out, nil
}

// waitReady waits (90 s at most) for an apiserver's /readyz.
func waitReady(cfg *rest.Config, member string) error {
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return err
	}
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := cl.Get(cfg.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within 90 s: %v", member, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
