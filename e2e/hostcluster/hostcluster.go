// Package hostcluster starts a kubesplit cluster as host processes for tests
// and benchmarks, on free loopback ports in a temporary data directory,
// through the same wiring as `make run` (pkg/localcluster).
package hostcluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/procs"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// BinDir returns the directory of the role binaries: $KUBESPLIT_BIN_DIR (set
// by `make test`, which builds once for every package), or bin/ after
// running hack/build.sh once per test process.
func BinDir() (string, error) {
	buildOnce.Do(func() {
		if d := os.Getenv("KUBESPLIT_BIN_DIR"); d != "" {
			binDir = d
			return
		}
		root, err := RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		binDir = filepath.Join(root, "bin")
		cmd := exec.Command(filepath.Join(root, "hack", "build.sh"))
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("hack/build.sh: %v\n%s", err, out)
		}
	})
	return binDir, buildErr
}

// RepoRoot finds the repository (the folder holding go.work) from the
// working directory up: `go test` runs in the package's folder. (Source file
// paths from runtime.Caller do not work: builds use -trimpath.)
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s: run the tests inside the kubesplit repository", dir)
		}
	}
}

// Options choose what a cluster runs.
type Options struct {
	// Backend is the datastore's --backend (default sqlite).
	Backend string
	// Roles to start, in order (default: all five).
	Roles []string
	// Extra arguments per role.
	Extra map[string][]string
	// Renewal is init's (certificate lifetime and renewal threshold).
	Renewal bootstrap.Renewal
}

// Cluster is a running host cluster.
type Cluster struct {
	Spec   localcluster.Spec
	Group  *procs.Group
	Config *rest.Config
	Client kubernetes.Interface

	t    testing.TB
	logs map[string]*SyncBuffer
}

// Start brings a cluster up and registers its teardown with t.Cleanup.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if o.Backend == "" {
		o.Backend = "sqlite"
	}
	if len(o.Roles) == 0 {
		o.Roles = localcluster.Roles
	}
	ports, err := localcluster.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, logs: map[string]*SyncBuffer{}}
	c.Spec = localcluster.Spec{
		BinDir: bin, DataDir: layout.Dir(t.TempDir()), Backend: o.Backend, Ports: ports, Extra: o.Extra, Renewal: o.Renewal,
		Output: func(role string) io.Writer {
			b := &SyncBuffer{}
			c.logs[role] = b
			return b
		},
	}
	if _, err := c.Spec.Init(); err != nil {
		t.Fatalf("init: %v", err)
	}
	c.Group = &procs.Group{}
	for _, r := range o.Roles {
		p, err := c.Spec.Process(r)
		if err != nil {
			t.Fatal(err)
		}
		c.Group.Procs = append(c.Group.Procs, p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(40)
		}
		c.Group.StopAll(10 * time.Second)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Group.StartAll(ctx); err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Spec.DataDir.Kubeconfig(layout.Admin))
	if err != nil {
		t.Fatal(err)
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	c.Client = kubernetes.NewForConfigOrDie(c.Config)
	return c
}

// Proc returns a role's process.
func (c *Cluster) Proc(role string) *procs.Process {
	p := c.Group.Get(role)
	if p == nil {
		c.t.Fatalf("role %s is not part of this cluster", role)
	}
	return p
}

// Restart starts a stopped or killed role again and waits until it is ready.
func (c *Cluster) Restart(role string) {
	c.t.Helper()
	p := c.Proc(role)
	if err := p.Start(); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		c.t.Fatal(err)
	}
}

// Log returns what a role has written so far.
func (c *Cluster) Log(role string) string {
	if b := c.logs[role]; b != nil {
		return b.String()
	}
	return ""
}

// DumpLogs prints the last n lines of every role's log to the test log.
func (c *Cluster) DumpLogs(n int) {
	for role, b := range c.logs {
		lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		c.t.Logf("---- last %d lines of %s ----\n%s", len(lines), role, strings.Join(lines, "\n"))
	}
}

// DatastoreClient connects straight to the datastore with the given TLS
// material; a zero TLSInfo field means "do not present/trust it".
func (c *Cluster) DatastoreClient(info transport.TLSInfo) (*clientv3.Client, error) {
	return EtcdClient(fmt.Sprintf("https://127.0.0.1:%d", c.Spec.Ports.Datastore), info)
}

// EtcdClient connects to an etcd API endpoint with the given TLS material.
func EtcdClient(endpoint string, info transport.TLSInfo) (*clientv3.Client, error) {
	tlsCfg, err := info.ClientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tlsCfg,
		DialTimeout: 3 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// AdminDatastoreTLS is the apiserver's client identity for the datastore.
func (c *Cluster) AdminDatastoreTLS() transport.TLSInfo {
	d := c.Spec.DataDir
	return transport.TLSInfo{CertFile: d.DatastoreClient().Cert, KeyFile: d.DatastoreClient().Key, TrustedCAFile: d.DatastoreCA().Cert}
}

// SyncBuffer collects a process's output while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
