package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/procs"
)

// kube-scheduler logs this (klog, structured) when it becomes the leader.
const acquired = `"Successfully acquired lease" lock="kube-system/kube-scheduler"`

func TestSchedulerLeaderElection(t *testing.T) {
	needLong(t)
	const lease, renew, retry = 6 * time.Second, 4 * time.Second, time.Second
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.Datastore, localcluster.APIServer}})
	ports, err := localcluster.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	var scheds []*procs.Process
	health := []int{ports.SchedulerHealth, ports.ControllersHealth}
	for i, port := range []int{ports.Scheduler, ports.Controllers} {
		p, err := c.Spec.Process(localcluster.Scheduler)
		if err != nil {
			t.Fatal(err)
		}
		p.Name = "scheduler-" + strconv.Itoa(i)
		// two schedulers on one host: each its own secure and health port
		p.Args = append(p.Args, "--secure-port", strconv.Itoa(port), "--health-address", "127.0.0.1:"+strconv.Itoa(health[i]),
			"--leader-elect-lease-duration", lease.String(), "--leader-elect-renew-deadline", renew.String(),
			"--leader-elect-retry-period", retry.String())
		p.Ready = procs.HTTPProbe("https://127.0.0.1:"+strconv.Itoa(port)+"/healthz", "")
		b := &hostcluster.SyncBuffer{}
		p.Output = b
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
		scheds = append(scheds, p)
	}
	outputs := func(i int) string { return scheds[i].Output.(*hostcluster.SyncBuffer).String() }

	leader := -1
	waitFor(t, time.Minute, "one scheduler to take the lease", func(context.Context) (bool, error) {
		for i := range scheds {
			if strings.Contains(outputs(i), acquired) {
				leader = i
				return true, nil
			}
		}
		return false, nil
	})
	follower := 1 - leader
	if strings.Contains(outputs(follower), acquired) {
		t.Fatal("both schedulers claim the lease")
	}
	holderBefore := leaseHolder(t, c)

	killedAt := time.Now()
	if err := scheds[leader].Kill(); err != nil {
		t.Fatal(err)
	}
	// The follower may take over once the lease is unrenewed for its
	// duration; it checks every retry period (with up to 1.2x jitter).
	limit := lease + 3*retry + time.Second
	waitFor(t, 2*limit, "the follower to take over", func(context.Context) (bool, error) {
		return strings.Contains(outputs(follower), acquired), nil
	})
	took := time.Since(killedAt)
	t.Logf("takeover %.1fs after the leader was killed (lease %s)", took.Seconds(), lease)
	if took > limit {
		t.Fatalf("takeover took %s, more than lease duration + retries (%s)", took, limit)
	}
	if h := leaseHolder(t, c); h == holderBefore {
		t.Fatalf("lease holder is still %q", h)
	}
}

func leaseHolder(t *testing.T, c *hostcluster.Cluster) string {
	t.Helper()
	l, err := c.Client.CoordinationV1().Leases("kube-system").Get(context.Background(), "kube-scheduler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}
