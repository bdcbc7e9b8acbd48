package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pkisecret"
)

// initSecret is `init --secret NS/NAME`.
func initSecret(cmd *cobra.Command, secret, kubeconfig string, o bootstrap.Options, pub publicAddress) error {
	ns, name, ok := strings.Cut(secret, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("--secret %q: want NAMESPACE/NAME", secret)
	}
	if pub.address != "" && pub.service != "" {
		return errors.New("--public-address and --public-address-from-service both name the address; give one")
	}
	cfg, err := clusterConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("--secret: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	recorded := recordedAddress(ctxOf(cmd), cs, ns, name)
	if pub.service != "" {
		ctx, cancel := context.WithTimeout(ctxOf(cmd), pub.timeout)
		pub.address, err = serviceAddress(ctx, cs, ns, pub.service, recorded)
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "public address %s (Service %s/%s)\n", pub.address, ns, pub.service)
	}
	if err := addressKept(recorded, pub.address, secret); err != nil {
		return err
	}
	if pub.address != "" {
		o.APIServerSANs = append(o.APIServerSANs, pub.address)
		o.GatewaySANs = append(o.GatewaySANs, pub.address)
		if !cmd.Flags().Changed("server") {
			o.Server = "https://" + net.JoinHostPort(pub.address, strconv.Itoa(pub.apiPort))
		}
	}
	rep, changed, err := syncSecret(ctxOf(cmd), cs, ns, name, o, pub.address)
	if err != nil {
		return err
	}
	for _, f := range rep.Renewed {
		fmt.Fprintf(cmd.OutOrStdout(), "renewed %s (less than %s left)\n", f, o.Renewal.Before)
	}
	state := "unchanged"
	if changed {
		state = "written"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Secret %s/%s %s: %d files created, %d renewed, %d kept\n",
		ns, name, state, len(rep.Created), len(rep.Renewed), len(rep.Kept))
	return nil
}

// clusterConfig is the in-cluster config, else the kubeconfig given or $KUBECONFIG.
func clusterConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
}

// syncSecret pulls the Secret into a scratch directory, runs init there and
// writes the result back, starting over if someone else wrote the Secret
// meanwhile. changed says whether the Secret was created or updated.
// publicAddress, when set, is kept as config/public-address: the chart's
// apiserver advertises it (the kubernetes Service's endpoint for pods on
// nodes, which reach it through the gateway's relay).
func syncSecret(ctx context.Context, cs kubernetes.Interface, ns, name string, o bootstrap.Options, publicAddress string) (*bootstrap.Report, bool, error) {
	for attempt := 0; ; attempt++ {
		rep, changed, err := syncSecretOnce(ctx, cs, ns, name, o, publicAddress)
		if errors.Is(err, pkisecret.ErrChanged) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("Secret %s/%s: %w", ns, name, err)
		}
		return rep, changed, nil
	}
}

func syncSecretOnce(ctx context.Context, cs kubernetes.Interface, ns, name string, o bootstrap.Options, publicAddress string) (*bootstrap.Report, bool, error) {
	snap, err := pkisecret.Get(ctx, cs, ns, name)
	if err != nil {
		return nil, false, err
	}
	dir, err := os.MkdirTemp("", "kubesplit-init-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, false, err
	}
	if err := snap.WriteDir(dir); err != nil {
		return nil, false, err
	}
	o.DataDir = layout.Dir(dir)
	rep, err := bootstrap.Run(o)
	if err != nil {
		return nil, false, err
	}
	if publicAddress != "" {
		if err := os.WriteFile(filepath.Join(dir, PublicAddressFile), []byte(publicAddress), 0o600); err != nil {
			return nil, false, err
		}
	}
	files, err := pkisecret.ReadDir(dir)
	if err != nil {
		return nil, false, err
	}
	changed, err := pkisecret.Put(ctx, cs, ns, name, map[string]string{"app.kubernetes.io/managed-by": "kubesplit"}, snap, files)
	return rep, changed, err
}

// PublicAddressFile is where init --secret keeps the public address, relative
// to the data directory (so in the Secret as config__public-address).
const PublicAddressFile = "config/public-address"

type publicAddress struct {
	address, service string
	apiPort          int
	timeout          time.Duration
}

func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// serviceAddress waits until Service ns/name has an address outside the
// cluster: its first LoadBalancer ingress (IP, else host name), else its
// first external IP.
func serviceAddress(ctx context.Context, cs kubernetes.Interface, ns, name, prefer string) (string, error) {
	var addr string
	var last error
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err
			return false, nil
		}
		addrs := addressesOf(svc)
		switch {
		case len(addrs) == 0:
			return false, nil
		case prefer == "":
			addr = addrs[0]
		case slices.Contains(addrs, prefer):
			// a load balancer that lists several addresses (ServiceLB: every
			// node's) may list them in another order next time: the one the
			// certificates and kubeconfigs already name stays
			addr = prefer
		default:
			// (ServiceLB fills the list as its forwarders start: wait for it)
			addr = addrs[0]
			return false, nil
		}
		return true, nil
	})
	if err != nil && addr != "" {
		// the Service has addresses, but not the recorded one: the caller's
		// addressKept says what that means
		return addr, nil
	}
	if err != nil {
		why := "it has no LoadBalancer ingress or external IP yet (is a load-balancer controller running? else set the address yourself)"
		if last != nil {
			why = last.Error()
		}
		return "", fmt.Errorf("--public-address-from-service %s/%s: no address after waiting: %s", ns, name, why)
	}
	return addr, nil
}

// addressKept refuses a public address other than the one recorded: the
// certificates, the admin kubeconfig, every joined node's --gateway and the
// kubernetes Service's endpoint name the recorded one, so moving is a
// decision with steps, not something a re-run may do by itself.
func addressKept(recorded, address, secret string) error {
	if recorded == "" || address == "" || recorded == address {
		return nil
	}
	return fmt.Errorf("the public address would change from %s (recorded in Secret %s; the certificates, the admin kubeconfig, "+
		"the nodes' --gateway and the kubernetes Service's endpoint use it) to %s: keep %s (the chart's gateway.address, or "+
		"give the Service that address again), or move the control plane: delete the keys admin.kubeconfig and "+
		"config__public-address from the Secret, run init again, restart the apiserver pods and rejoin the nodes with the new address",
		recorded, secret, address, recorded)
}

// recordedAddress is the public address an earlier run kept in the Secret
// (empty when there is none yet).
func recordedAddress(ctx context.Context, cs kubernetes.Interface, ns, name string) string {
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return string(sec.Data[strings.ReplaceAll(PublicAddressFile, "/", "__")])
}

// addressesOf lists a Service's LoadBalancer ingress addresses, else its external IPs.
func addressesOf(svc *corev1.Service) []string {
	var out []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			out = append(out, in.IP)
		} else if in.Hostname != "" {
			out = append(out, in.Hostname)
		}
	}
	if len(out) == 0 {
		out = append(out, svc.Spec.ExternalIPs...)
	}
	return out
}
