package snapshot

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

// An online restore puts a running etcd cluster's keys under a prefix back
// to a snapshot's, over the etcd API: keys the snapshot lacks are deleted,
// the others written where they differ. Unlike RestoreEtcd (a member's data
// directory, rebuilt while it is stopped) no member needs the file and the
// cluster keeps its members, its identity and its revisions, which only move
// forward: a client's watch sees the restore as ordinary changes, and a
// client that resumes one later is answered from the restored state. It is
// how the Helm chart restores a three-member cluster from a snapshot on one
// volume.
//
// Keys attached to a lease (the apiserver's Events and its endpoint leases)
// are left alone on both sides: they expire on their own, and the snapshot's
// leases do not exist in the running cluster.

// RestoredKey is where an online restore records the digest of the snapshot
// it restored, outside the apiserver's prefix so a later restore does not
// touch it.
const RestoredKey = "/kubesplit/restored-from"

// DefaultPrefix is the apiserver's (its --etcd-prefix) and kine's key space.
const DefaultPrefix = "/registry/"

// Ops and bytes per transaction: under etcd's defaults (--max-txn-ops 128,
// --max-request-bytes 1.5 MiB). A single larger value goes alone.
const (
	txnOps   = 100
	txnBytes = 1 << 20
)

// OnlineResult counts what an online restore did.
type OnlineResult struct {
	Put, Deleted, Unchanged, Leased int
	// Revision is the cluster's revision once the restore was applied.
	Revision int64
}

func (r OnlineResult) String() string {
	return fmt.Sprintf("%d keys written, %d deleted, %d unchanged, %d attached to leases left alone; revision %d",
		r.Put, r.Deleted, r.Unchanged, r.Leased, r.Revision)
}

// EtcdClient connects to a running member with the datastore's client
// certificate.
func EtcdClient(d layout.Dir, endpoint string) (*clientv3.Client, error) {
	tlsCfg, err := clientTLS(d)
	if err != nil {
		return nil, err
	}
	return clientv3.New(etcdClientConfig(endpoint, tlsCfg))
}

// clientTLS is the datastore client certificate's TLS configuration.
func clientTLS(d layout.Dir) (*tls.Config, error) {
	info := transport.TLSInfo{CertFile: d.DatastoreClient().Cert, KeyFile: d.DatastoreClient().Key, TrustedCAFile: d.DatastoreCA().Cert}
	return info.ClientConfig()
}

// ReadEtcdSnapshot returns the live keys under prefix of an etcd snapshot
// file (the state at the snapshot's revision), reading it in place: the
// file is opened read-only and its key bucket is replayed in revision order,
// each key's last revision winning and tombstones removing it, as etcd's
// own index is rebuilt at start.
func ReadEtcdSnapshot(path, prefix string) (map[string]*mvccpb.KeyValue, error) {
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("%s is not an etcd snapshot: %w", path, err)
	}
	defer db.Close()
	state := map[string]*mvccpb.KeyValue{}
	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(schema.Key.Name())
		if b == nil {
			return fmt.Errorf("%s is not an etcd snapshot: it has no key bucket", path)
		}
		return b.ForEach(func(rev, v []byte) error {
			kv := &mvccpb.KeyValue{}
			// (Unmarshal copies: the bucket's memory is gone after View)
			if err := kv.Unmarshal(v); err != nil {
				return fmt.Errorf("revision %v: %w", mvcc.BytesToRev(rev), err)
			}
			key := string(kv.Key)
			if !strings.HasPrefix(key, prefix) {
				return nil
			}
			if mvcc.IsTombstone(rev) {
				delete(state, key)
			} else {
				state[key] = kv
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return state, nil
}

// EtcdRestoredFrom is the digest RestoreEtcdOnline last recorded, or "".
func EtcdRestoredFrom(ctx context.Context, cli *clientv3.Client) (string, error) {
	resp, err := cli.Get(ctx, RestoredKey)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// PlanEtcdOnline compares the running cluster's keys under prefix with a
// snapshot's and returns the operations that make them equal, without
// applying them.
func PlanEtcdOnline(ctx context.Context, cli *clientv3.Client, snap map[string]*mvccpb.KeyValue, prefix string) (ops []clientv3.Op, res OnlineResult, err error) {
	seen := map[string]bool{}
	var deletes []string
	// one consistent view: every page at the first page's revision
	var rev int64
	from, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(500), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, res, fmt.Errorf("reading the running cluster's keys: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			s := snap[key]
			seen[key] = true
			switch {
			case kv.Lease != 0 || (s != nil && s.Lease != 0):
				res.Leased++
			case s == nil:
				deletes = append(deletes, key)
			case bytes.Equal(s.Value, kv.Value):
				res.Unchanged++
			default:
				ops = append(ops, clientv3.OpPut(key, string(s.Value)))
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	var missing []string
	for key, s := range snap {
		if seen[key] {
			continue
		}
		if s.Lease != 0 {
			res.Leased++
			continue
		}
		missing = append(missing, key)
	}
	sort.Strings(missing)
	for _, key := range missing {
		ops = append(ops, clientv3.OpPut(key, string(snap[key].Value)))
	}
	res.Put = len(ops)
	for _, key := range deletes {
		ops = append(ops, clientv3.OpDelete(key))
	}
	res.Deleted = len(deletes)
	return ops, res, nil
}

// RestoreEtcdOnline makes the running cluster's keys under prefix those of
// a snapshot (ReadEtcdSnapshot), then records digest at RestoredKey. It runs
// again safely after a failure part way: what is already equal is left.
func RestoreEtcdOnline(ctx context.Context, cli *clientv3.Client, snap map[string]*mvccpb.KeyValue, prefix, digest string) (OnlineResult, error) {
	ops, res, err := PlanEtcdOnline(ctx, cli, snap, prefix)
	if err != nil {
		return res, err
	}
	for len(ops) > 0 {
		n, size := 0, 0
		for n < len(ops) && n < txnOps {
			size += len(ops[n].KeyBytes()) + len(ops[n].ValueBytes())
			if n > 0 && size > txnBytes {
				break
			}
			n++
		}
		if _, err := cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return res, fmt.Errorf("applying the restore (%d operations left; running it again resumes): %w", len(ops), err)
		}
		ops = ops[n:]
	}
	resp, err := cli.Put(ctx, RestoredKey, digest)
	if err != nil {
		return res, fmt.Errorf("recording the restore: %w", err)
	}
	res.Revision = resp.Header.Revision
	return res, nil
}

// etcdClientConfig is how the snapshot commands reach a member.
func etcdClientConfig(endpoint string, tlsCfg *tls.Config) clientv3.Config {
	return clientv3.Config{Endpoints: []string{endpoint}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
}
