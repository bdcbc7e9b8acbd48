package tunnelproto

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNodeConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg NodeConfig
		ok  bool
	}{
		{NodeConfig{APIServerName: "kubernetes"}, true},
		{NodeConfig{APIServerName: "kubernetes.cp1.example", LocalAPIServerAddress: "192.0.2.1:6443"}, true},
		{NodeConfig{}, false},
		{NodeConfig{APIServerName: "https://x"}, false},
		{NodeConfig{APIServerName: "k", LocalAPIServerAddress: "169.254.1.1:6443"}, false}, // the apiserver refuses link-local endpoints
		{NodeConfig{APIServerName: "k", LocalAPIServerAddress: "127.0.0.1:6443"}, false},
		{NodeConfig{APIServerName: "k", LocalAPIServerAddress: "192.0.2.1"}, false},
		{NodeConfig{APIServerName: "k", LocalAPIServerAddress: "[2001:db8::1]:6443"}, false},
		{NodeConfig{APIServerName: "k", LocalAPIServerAddress: "0.0.0.0:6443"}, false},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.cfg, err)
		}
		if err != nil && c.cfg.LocalAPIServerAddress != "" && c.cfg.APIServerName == "k" && !strings.Contains(err.Error(), "192.0.2.1:6443") {
			t.Errorf("%+v: the error shows no example: %v", c.cfg, err)
		}
	}
}

func TestFetchNodeConfig(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /a"+NodeConfigPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"apiServerName":"kubernetes.cp1.example","localAPIServerAddress":"192.0.2.1:6443"}`))
	})
	mux.HandleFunc("GET /bad"+NodeConfigPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"apiServerName":"kubernetes","localAPIServerAddress":"169.254.0.1:6443"}`))
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	ctx := context.Background()
	if c, err := FetchNodeConfig(ctx, srv.URL+"/a", tlsCfg); err != nil || c.APIServerName != "kubernetes.cp1.example" || c.LocalAPIServerAddress != "192.0.2.1:6443" {
		t.Errorf("served config: %+v %v", c, err)
	}
	// an older gateway without the endpoint: the defaults
	if c, err := FetchNodeConfig(ctx, srv.URL+"/old", tlsCfg); err != nil || c != (NodeConfig{APIServerName: DefaultAPIServerName}) {
		t.Errorf("older gateway: %+v %v", c, err)
	}
	if _, err := FetchNodeConfig(ctx, srv.URL+"/bad", tlsCfg); err == nil {
		t.Error("an invalid config was taken")
	}
	// the gateway is verified with the cluster CA
	if _, err := FetchNodeConfig(ctx, srv.URL+"/a", &tls.Config{}); err == nil {
		t.Error("an unverified gateway was read")
	}
}
