package procs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// HTTPProbe passes when GET url answers 200. With caFile set the server
// certificate is verified; otherwise (self-signed health ports of the
// scheduler and controllers) it is not, which is fine for a health check
// that carries no credentials.
func HTTPProbe(url, caFile string) Probe {
	tlsCfg := &tls.Config{InsecureSkipVerify: caFile == ""} //nolint:gosec // see doc comment
	if caFile != "" {
		pool := x509.NewCertPool()
		if b, err := os.ReadFile(caFile); err == nil {
			pool.AppendCertsFromPEM(b)
		}
		tlsCfg.RootCAs = pool
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
