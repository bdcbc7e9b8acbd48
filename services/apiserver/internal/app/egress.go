package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/services/apiserver/internal/egress"
)

// egressSelector routes the apiserver's "cluster" traffic (kubelets: logs,
// exec, attach, port-forward, metrics; pods: webhooks, aggregated APIs,
// pods/proxy, services/proxy) through the egress relay's unix socket, which
// carries it to the gateway (package egress says why).
func egressSelector(socket string) []byte {
	return egressSelection(fmt.Sprintf(`uds:
        udsName: %s`, socket))
}

// egressSelectorDirect is the same through a new mutual-TLS connection to
// the gateway per dial (--egress-relay=false).
func egressSelectorDirect(d layout.Dir, hostPort string) []byte {
	return egressSelection(fmt.Sprintf(`tcp:
        url: https://%s
        tlsConfig:
          caBundle: %s
          clientCert: %s
          clientKey: %s`, hostPort, d.ClusterCA().Cert, d.APIServerEgressClient().Cert, d.APIServerEgressClient().Key))
}

func egressSelection(transport string) []byte {
	return fmt.Appendf(nil, `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      %s
`, transport)
}

// EgressSocket is where the egress relay listens, in the apiserver's own
// state directory (mode 0700).
func (o Options) EgressSocket() string {
	return filepath.Join(layout.Dir(o.DataDir).RoleState("apiserver"), "egress.sock")
}

// startEgressRelay serves the egress socket: each CONNECT becomes a stream
// of one mTLS HTTP/2 connection to --egress-gateway.
func (o Options) startEgressRelay(stderr io.Writer) error {
	d := layout.Dir(o.DataDir)
	caPEM, err := os.ReadFile(d.ClusterCA().Cert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", d.ClusterCA().Cert)
	}
	r := &egress.Relay{Socket: o.EgressSocket(), Gateway: strings.TrimPrefix(o.EgressGateway, "https://"), Early: !o.EgressWait,
		Log: logging.New("apiserver-egress", stderr, slog.LevelInfo),
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12,
			// read at each dial: a renewed certificate is used on the next connection
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(d.APIServerEgressClient().Cert, d.APIServerEgressClient().Key)
				return &c, err
			}}}
	ln, err := r.Listen()
	if err != nil {
		return err
	}
	go func() {
		if err := r.Serve(context.Background(), ln); err != nil {
			r.Log.Error("egress relay stopped", "err", err)
		}
	}()
	return nil
}
