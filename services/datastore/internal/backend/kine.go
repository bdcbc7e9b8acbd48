package backend

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/endpoint"
	kinetls "github.com/k3s-io/kine/pkg/tls"

	// kine drivers register themselves by DSN scheme.
	_ "github.com/k3s-io/kine/pkg/drivers/mysql"
	_ "github.com/k3s-io/kine/pkg/drivers/pgsql"
	_ "github.com/k3s-io/kine/pkg/drivers/sqlite"
)

// sqliteParams: WAL with synchronous=FULL so an acknowledged write survives
// not only a killed process but a host crash; immediate transactions avoid
// writer deadlocks under concurrency.
const sqliteParams = "_journal_mode=WAL&_busy_timeout=30000&_synchronous=FULL&_txlock=immediate"

type kineServer struct {
	cancel context.CancelFunc
	wg     *sync.WaitGroup
	ready  chan struct{}
	done   chan struct{}
}

func startKine(ctx context.Context, c Config) (Server, error) {
	ep := c.Backend
	if c.Kind == SQLite {
		if err := os.MkdirAll(c.DataDir.DatastoreData(), 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", c.DataDir.DatastoreData(), err)
		}
		ep = "sqlite://" + c.DataDir.SQLiteFile() + "?" + sqliteParams
	}
	tlsInfo := ServerTLS(c.DataDir)
	kctx, cancel := context.WithCancel(ctx)
	wg := &sync.WaitGroup{}
	_, err := endpoint.Listen(kctx, endpoint.Config{
		WaitGroup: wg,
		Listener:  "tcp://" + c.ListenAddress,
		Endpoint:  ep,
		ServerTLSConfig: kinetls.Config{
			CertFile:      tlsInfo.CertFile,
			KeyFile:       tlsInfo.KeyFile,
			TrustedCAFile: tlsInfo.TrustedCAFile, // makes the client certificate mandatory
		},
		// kine's own command-line defaults, which endpoint.Config does not fill
		// in. Its automatic compaction is off: see Compactor.
		CompactInterval:     0,
		CompactTimeout:      5 * time.Second,
		CompactMinRetain:    CompactMinRetain,
		CompactBatchSize:    1000,
		PollBatchSize:       500,
		NotifyInterval:      5 * time.Second,
		EmulatedETCDVersion: "3.6.11",
	})
	if err != nil {
		cancel()
		// kine's error names the endpoint kind, never the DSN.
		return nil, fmt.Errorf("starting the %s backend: %w", c.Kind, err)
	}
	s := &kineServer{cancel: cancel, wg: wg, ready: make(chan struct{}), done: make(chan struct{})}
	close(s.ready)
	go func() {
		<-kctx.Done()
		wg.Wait()
		close(s.done)
	}()
	return s, nil
}

func (s *kineServer) Ready() <-chan struct{} { return s.ready }
func (s *kineServer) Done() <-chan struct{}  { return s.done }
func (s *kineServer) Err() error             { return nil }
func (s *kineServer) Close() {
	s.cancel()
	<-s.done
}
