package jointoken

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kubesplit/kubesplit/pkg/pki"
)

// CAPath is where the tunnel gateway serves the cluster CA bundle.
const CAPath = "/cacerts"

// ErrPinMismatch means the gateway offered a CA other than the one the token
// pins: the wrong cluster, or someone in between.
var ErrPinMismatch = errors.New("the gateway's CA does not match the join token's pin")

// FetchCA downloads the cluster CA bundle from the gateway at baseURL and
// accepts it only if a certificate in it has the token's pinned SHA-256 and
// the gateway's own serving certificate chains to it. Nothing secret is sent:
// the token's secret is used only after this check passes.
func FetchCA(ctx context.Context, baseURL string, tok Token) (*x509.Certificate, error) {
	// The CA is not known yet, so the TLS handshake cannot verify the server;
	// the pin check below does, before anything is trusted.
	client := &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // verified by pin below
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+CAPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the CA bundle from %s: %w", baseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the CA bundle from %s: %s", baseURL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var offered []string
	for rest := body; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !cert.IsCA {
			continue
		}
		fp := pki.Fingerprint(cert)
		offered = append(offered, fp)
		if fp != tok.CAHash {
			continue
		}
		if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
			return nil, fmt.Errorf("%s is not served over TLS; use the gateway's https:// address", baseURL)
		}
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		inter := x509.NewCertPool()
		for _, c := range resp.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := resp.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter}); err != nil {
			return nil, fmt.Errorf("%w: the gateway's serving certificate is not signed by the pinned CA", ErrPinMismatch)
		}
		return cert, nil
	}
	return nil, fmt.Errorf("%w: token pins sha256 %s, gateway offered %v", ErrPinMismatch, tok.CAHash, offered)
}
