package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

// TestDurabilityUnderSIGKILL kills the datastore while writers create
// objects; every create that got a success answer must survive the restart.
func TestDurabilityUnderSIGKILL(t *testing.T) {
	needLong(t)
	for _, backend := range []string{"sqlite", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			c := hostcluster.Start(t, hostcluster.Options{Backend: backend,
				Roles: []string{localcluster.Datastore, localcluster.APIServer}})
			ns := newNamespace(t, c.Client)
			cms := c.Client.CoreV1().ConfigMaps(ns)

			var (
				mu    sync.Mutex
				acked []string
				fails int
			)
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ctx.Err() == nil && i < 100000; i++ {
						name := fmt.Sprintf("w%d-%d", w, i)
						rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						_, err := cms.Create(rctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
						cancel()
						mu.Lock()
						if err == nil {
							acked = append(acked, name)
						} else {
							fails++
						}
						mu.Unlock()
						if err != nil {
							time.Sleep(50 * time.Millisecond)
						}
					}
				}()
			}
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
			waitFor(t, time.Minute, "writes before the kill", func(context.Context) (bool, error) { return count() >= 100, nil })

			if err := c.Proc(localcluster.Datastore).Kill(); err != nil {
				t.Fatal(err)
			}
			killedAt := count()
			time.Sleep(time.Second)
			c.Restart(localcluster.Datastore)
			waitFor(t, time.Minute, "writes after the restart", func(context.Context) (bool, error) { return count() >= killedAt+100, nil })
			stop()
			wg.Wait()

			list, err := cms.List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, cm := range list.Items {
				have[cm.Name] = true
			}
			missing := 0
			for _, name := range acked {
				if !have[name] {
					missing++
					if missing <= 5 {
						t.Errorf("acknowledged write %s is gone", name)
					}
				}
			}
			t.Logf("%d acknowledged writes (%d at the kill), %d failed during the outage, %d missing",
				len(acked), killedAt, fails, missing)
			if missing > 0 {
				t.Fatalf("%d acknowledged writes lost", missing)
			}
		})
	}
}
