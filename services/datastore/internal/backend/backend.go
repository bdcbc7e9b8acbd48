// Package backend starts the datastore's etcd v3 API on the chosen storage:
// kine over SQLite/PostgreSQL/MySQL, or an embedded etcd member.
package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

// Kind is the storage family picked by --backend.
type Kind string

const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
	MySQL    Kind = "mysql"
	Etcd     Kind = "etcd"
)

// ErrBadDSN marks a --backend value that is not usable. Its message never
// holds the DSN itself: DSNs carry passwords.
var ErrBadDSN = errors.New("invalid --backend")

// ParseBackend reads --backend: "sqlite", "etcd", "sqlite:///path", or a
// postgres:// / postgresql:// / mysql:// DSN.
func ParseBackend(s string) (Kind, error) {
	switch s {
	case "", "sqlite":
		return SQLite, nil
	case "etcd":
		return Etcd, nil
	}
	scheme, _, ok := strings.Cut(s, "://")
	if !ok {
		return "", fmt.Errorf("%w: expected sqlite, etcd, or a DSN like postgres://USER:PASSWORD@HOST:5432/DB or mysql://USER:PASSWORD@tcp(HOST:3306)/DB", ErrBadDSN)
	}
	var kind Kind
	switch strings.ToLower(scheme) {
	case "sqlite":
		return SQLite, nil
	case "postgres", "postgresql":
		kind = Postgres
	case "mysql":
		// kine's mysql DSNs use the go-sql-driver form tcp(host:port), which is not a URL.
		return MySQL, nil
	default:
		return "", fmt.Errorf("%w: unsupported scheme %q; use sqlite, etcd, postgres:// or mysql://", ErrBadDSN, scheme)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		cause := "malformed URL"
		if errors.As(err, &ue) {
			cause = ue.Err.Error()
		}
		// A URL error may echo parts of the DSN; keep only fixed wording.
		if strings.Contains(cause, "invalid port") {
			cause = "invalid port"
		} else if strings.Contains(cause, "userinfo") {
			cause = "invalid user or password characters (percent-encode them)"
		} else {
			cause = "malformed URL"
		}
		return "", fmt.Errorf("%w: the %s DSN is not a valid URL (%s); expected postgres://USER:PASSWORD@HOST:5432/DB", ErrBadDSN, kind, cause)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%w: the %s DSN has no host; expected postgres://USER:PASSWORD@HOST:5432/DB", ErrBadDSN, kind)
	}
	return kind, nil
}

// Config is what every backend needs.
type Config struct {
	DataDir layout.Dir
	// Backend is the raw --backend value.
	Backend string
	Kind    Kind
	// ListenAddress is host:port for the etcd client API.
	ListenAddress string
	// AdvertiseClientURL is how clients reach this member (etcd only).
	AdvertiseClientURL string
	// CompactInterval is how often kine drops old revisions.
	CompactInterval time.Duration
	Etcd            EtcdConfig
	// EtcdLogLevel is the embedded etcd's zap level: debug, info, warn, error.
	EtcdLogLevel string
}

// EtcdConfig are the embedded etcd member's settings.
type EtcdConfig struct {
	Name                string
	PeerAddress         string
	AdvertisePeerURL    string
	InitialCluster      string
	InitialClusterState string
	// Join is the client URL of a running member: this member adds itself
	// to that cluster (member add) and starts as part of it.
	Join string
}

// Server is a running datastore.
type Server interface {
	// Ready is closed once the API serves requests.
	Ready() <-chan struct{}
	// Done is closed when the server stopped on its own (with Err set).
	Done() <-chan struct{}
	Err() error
	// Close stops serving.
	Close()
}

// Start picks the backend by kind.
func Start(ctx context.Context, c Config) (Server, error) {
	if c.Kind == Etcd {
		return startEtcd(ctx, c)
	}
	return startKine(ctx, c)
}

// ServerTLS is the client-facing TLS setup: a client must present a
// certificate signed by the datastore CA.
func ServerTLS(d layout.Dir) transport.TLSInfo {
	return transport.TLSInfo{
		CertFile:       d.DatastoreServer().Cert,
		KeyFile:        d.DatastoreServer().Key,
		TrustedCAFile:  d.DatastoreCA().Cert,
		ClientCertAuth: true,
	}
}

// LocalClient connects to this datastore's API on its listen address, for
// health checks and compaction.
func LocalClient(d layout.Dir, addr string) (*clientv3.Client, error) {
	return memberClient(d, "https://"+dialable(addr))
}

// memberClient connects to endpoint with the datastore's own certificate
// (it carries client usage): how a member talks to itself and to its peers'
// client API.
func memberClient(d layout.Dir, endpoint string) (*clientv3.Client, error) {
	info := transport.TLSInfo{
		CertFile:      d.DatastoreServer().Cert,
		KeyFile:       d.DatastoreServer().Key,
		TrustedCAFile: d.DatastoreCA().Cert,
	}
	tlsCfg, err := info.ClientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// dialable turns a wildcard listen address into a loopback one.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
