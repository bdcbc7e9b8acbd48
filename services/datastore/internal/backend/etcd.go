package backend

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

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
	cfg.LogLevel = "warn"
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
