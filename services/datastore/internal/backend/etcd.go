package backend

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/embed"
)

type etcdServer struct {
	e    *embed.Etcd
	done chan struct{}
	err  error
}

func mustURL(s string) (url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return url.URL{}, fmt.Errorf("%q is not a URL like https://HOST:PORT", s)
	}
	return *u, nil
}

func startEtcd(ctx context.Context, c Config) (Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.Etcd.Name
	cfg.Dir = c.DataDir.EtcdData()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.Dir, err)
	}
	listenClient, err := mustURL("https://" + c.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("--listen-address: %w", err)
	}
	advClient := "https://" + dialable(c.ListenAddress)
	if c.AdvertiseClientURL != "" {
		advClient = c.AdvertiseClientURL
	}
	advClientURL, err := mustURL(advClient)
	if err != nil {
		return nil, fmt.Errorf("--advertise-client-url: %w", err)
	}
	listenPeer, err := mustURL("https://" + c.Etcd.PeerAddress)
	if err != nil {
		return nil, fmt.Errorf("--etcd-peer-address: %w", err)
	}
	advPeer := "https://" + dialable(c.Etcd.PeerAddress)
	if c.Etcd.AdvertisePeerURL != "" {
		advPeer = c.Etcd.AdvertisePeerURL
	}
	advPeerURL, err := mustURL(advPeer)
	if err != nil {
		return nil, fmt.Errorf("--etcd-advertise-peer-url: %w", err)
	}
	cfg.ListenClientUrls = []url.URL{listenClient}
	cfg.AdvertiseClientUrls = []url.URL{advClientURL}
	cfg.ListenPeerUrls = []url.URL{listenPeer}
	cfg.AdvertisePeerUrls = []url.URL{advPeerURL}
	cfg.InitialCluster = c.Etcd.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.Name + "=" + advPeer
	}
	cfg.ClusterState = c.Etcd.InitialClusterState
	if c.Etcd.Join != "" && !hasMemberData(cfg.Dir) {
		initial, err := joinCluster(ctx, c, cfg.Name, advPeer)
		if err != nil {
			return nil, err
		}
		cfg.InitialCluster, cfg.ClusterState = initial, embed.ClusterStateFlagExisting
	}
	cfg.InitialClusterToken = "kubesplit"
	cfg.ClientTLSInfo = ServerTLS(c.DataDir)
	cfg.PeerTLSInfo = ServerTLS(c.DataDir)
	cfg.PeerTLSInfo.CertFile = c.DataDir.DatastorePeer().Cert
	cfg.PeerTLSInfo.KeyFile = c.DataDir.DatastorePeer().Key
	// The apiserver compacts every 5 minutes; etcd keeps an hour of history
	// on its own as a safety net for other clients.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	cfg.Logger = "zap"
	cfg.LogLevel = c.EtcdLogLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.ListenMetricsUrls = nil
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd configuration: %w", err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd: %w", err)
	}
	s := &etcdServer{e: e, done: make(chan struct{})}
	go func() {
		select {
		case err := <-e.Err():
			s.err = err
		case <-e.Server.StopNotify():
			s.err = errors.New("etcd server stopped")
		}
		close(s.done)
	}()
	return s, nil
}

func hasMemberData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member"))
	return err == nil
}

// joinCluster adds this member to the cluster behind c.Etcd.Join and returns
// the initial-cluster string etcd needs to start as its new member.
func joinCluster(ctx context.Context, c Config, name, peerURL string) (string, error) {
	cli, err := memberClient(c.DataDir, c.Etcd.Join)
	if err != nil {
		return "", fmt.Errorf("--etcd-join: connecting to %s: %w", c.Etcd.Join, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("--etcd-join: listing members of %s: %w", c.Etcd.Join, err)
	}
	members := list.Members
	var selfID uint64
	for _, m := range members {
		if slices.Contains(m.PeerURLs, peerURL) {
			selfID = m.ID // added before, but never started with data: start again
		}
	}
	for selfID == 0 {
		added, err := cli.MemberAdd(ctx, []string{peerURL})
		if err == nil {
			members, selfID = added.Members, added.Member.ID
			break
		}
		// etcd refuses a new member until every started member has been
		// connected for a while (strict reconfig check): a member that just
		// joined makes the next one wait a few seconds.
		if !errors.Is(err, rpctypes.ErrUnhealthy) || ctx.Err() != nil {
			return "", fmt.Errorf("--etcd-join: adding member %s at %s: %w", name, peerURL, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == selfID {
			n = name
		}
		if n == "" {
			return "", fmt.Errorf("--etcd-join: member %x has not started yet; start the members one at a time", m.ID)
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ","), nil
}

func (s *etcdServer) Ready() <-chan struct{} { return s.e.Server.ReadyNotify() }
func (s *etcdServer) Done() <-chan struct{}  { return s.done }
func (s *etcdServer) Err() error             { return s.err }
func (s *etcdServer) Close() {
	s.e.Close()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
}
