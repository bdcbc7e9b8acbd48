package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func TestRolloutOrder(t *testing.T) {
	held := []string{"tunnel-gateway", "scheduler", "apiserver"}
	if got := rolloutOrder(held, false); !slices.Equal(got, []string{"apiserver", "scheduler", "tunnel-gateway"}) {
		t.Errorf("up: %v", got)
	}
	if got := rolloutOrder(held, true); !slices.Equal(got, []string{"tunnel-gateway", "scheduler", "apiserver"}) {
		t.Errorf("down: %v", got)
	}
	if got := rolloutOrder([]string{"controllers", "datastore"}, false); !slices.Equal(got, []string{"controllers"}) {
		t.Errorf("the datastore is never held: %v", got)
	}
}

func TestDeploymentRolledOut(t *testing.T) {
	d := func(mut func(*appsv1.Deployment)) *appsv1.Deployment {
		x := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "apiserver", Generation: 3}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}}
		mut(x)
		return x
	}
	for _, c := range []struct {
		name string
		d    *appsv1.Deployment
		done bool
		why  string
		err  string
	}{
		{"done", d(func(*appsv1.Deployment) {}), true, "", ""},
		{"paused", d(func(x *appsv1.Deployment) { x.Spec.Paused = true }), false, "paused", ""},
		{"spec not seen", d(func(x *appsv1.Deployment) { x.Generation = 4 }), false, "not seen", ""},
		{"one updated", d(func(x *appsv1.Deployment) { x.Status.UpdatedReplicas = 1 }), false, "1 of 2 replicas updated", ""},
		{"an old one left", d(func(x *appsv1.Deployment) { x.Status.Replicas = 3 }), false, "1 old replicas", ""},
		{"not available", d(func(x *appsv1.Deployment) { x.Status.AvailableReplicas = 1 }), false, "1 of 2 updated replicas available", ""},
		{"deadline", d(func(x *appsv1.Deployment) {
			x.Status.UpdatedReplicas = 1
			x.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet \"apiserver-x\" has timed out progressing."}}
		}), false, "", "exceeded its progress deadline: ReplicaSet"},
	} {
		done, why, err := deploymentRolledOut(c.d)
		if done != c.done || !strings.Contains(why, c.why) || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: got %v %q %v", c.name, done, why, err)
		}
	}
	s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3)},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, UpdatedReplicas: 3, ReadyReplicas: 3, CurrentRevision: "b", UpdateRevision: "b"}}
	if done, why := statefulSetRolledOut(s); !done {
		t.Errorf("statefulset done: %s", why)
	}
	s.Status.CurrentRevision = "a"
	if done, _ := statefulSetRolledOut(s); done {
		t.Error("a statefulset with members on the old revision is not rolled out")
	}
}

// rolloutCluster is a fake host with the chart's objects and a stand-in for
// the Deployment controller: an unpaused Deployment rolls out after a while,
// unless it is in stuck. It records the order of resumes and fails the test
// if a role is resumed while another resumed role is still rolling.
type rolloutCluster struct {
	t       *testing.T
	cs      *fake.Clientset
	mu      sync.Mutex
	resumed []string
	stuck   string
}

func newRolloutCluster(t *testing.T, held ...string) *rolloutCluster {
	objs := []runtime.Object{&appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "datastore", Namespace: "cp"},
		Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1)},
		// rolling on Helm's apply: must be done before any held role resumes
		Status: appsv1.StatefulSetStatus{UpdatedReplicas: 0, ReadyReplicas: 1, CurrentRevision: "a", UpdateRevision: "b"},
	}}
	for _, n := range upgradeOrder {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "cp"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status: appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}}
		if slices.Contains(held, n) {
			d.Spec.Paused = true
			d.Annotations = map[string]string{HeldAnnotation: "true"}
			d.Status.UpdatedReplicas = 0 // the new template waits
		}
		objs = append(objs, d)
	}
	c := &rolloutCluster{t: t, cs: fake.NewClientset(objs...)}
	// the chart's Role names the one StatefulSet it may read
	c.cs.PrependReactor("get", "statefulsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if n := a.(k8stesting.GetAction).GetName(); n != "datastore" {
			return true, nil, apierrors.NewForbidden(appsv1.Resource("statefulsets"), n, errors.New("not in the Role"))
		}
		return false, nil, nil
	})
	c.cs.PrependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := a.(k8stesting.PatchAction).GetName()
		if s, _ := c.cs.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("statefulsets"), "cp", "datastore"); s != nil {
			if done, why := statefulSetRolledOut(s.(*appsv1.StatefulSet)); !done {
				t.Errorf("%s resumed while the datastore rolls: %s", name, why)
			}
		}
		// (the tracker, not the clientset: reactors run under its lock)
		for _, r := range c.names() {
			o, err := c.cs.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("deployments"), "cp", r)
			if err != nil {
				t.Error(err)
				continue
			}
			if done, why, _ := deploymentRolledOut(o.(*appsv1.Deployment)); !done {
				t.Errorf("%s resumed while %s still rolls: %s", name, r, why)
			}
		}
		c.mu.Lock()
		c.resumed = append(c.resumed, name)
		c.mu.Unlock()
		return false, nil, nil // the tracker applies the patch
	})
	return c
}

func (c *rolloutCluster) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.resumed)
}

// control plays the controllers until ctx ends.
func (c *rolloutCluster) control(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if i == 5 {
			s, _ := c.cs.AppsV1().StatefulSets("cp").Get(ctx, "datastore", metav1.GetOptions{})
			s.Status.UpdatedReplicas, s.Status.CurrentRevision = 1, "b"
			_, _ = c.cs.AppsV1().StatefulSets("cp").UpdateStatus(ctx, s, metav1.UpdateOptions{})
		}
		list, _ := c.cs.AppsV1().Deployments("cp").List(ctx, metav1.ListOptions{})
		for _, d := range list.Items {
			if !d.Spec.Paused && d.Status.UpdatedReplicas == 0 && d.Name != c.stuck {
				d.Status.UpdatedReplicas = 1 // halfway this tick, done the next
				_, _ = c.cs.AppsV1().Deployments("cp").UpdateStatus(ctx, &d, metav1.UpdateOptions{})
			} else if !d.Spec.Paused && d.Status.UpdatedReplicas == 1 {
				d.Status.UpdatedReplicas = 2
				_, _ = c.cs.AppsV1().Deployments("cp").UpdateStatus(ctx, &d, metav1.UpdateOptions{})
			}
		}
	}
}

func TestRolloutOneAtATime(t *testing.T) {
	defer func(p, to time.Duration) { rolloutPoll, rolloutTimeout = p, to }(rolloutPoll, rolloutTimeout)
	rolloutPoll = 5 * time.Millisecond
	for _, c := range []struct {
		name  string
		held  []string
		down  bool
		stuck string
		want  []string
		err   string
	}{
		{"up", []string{"apiserver", "scheduler", "tunnel-gateway"}, false, "", []string{"apiserver", "scheduler", "tunnel-gateway"}, ""},
		{"down: the clients first", []string{"apiserver", "controllers", "scheduler"}, true, "", []string{"scheduler", "controllers", "apiserver"}, ""},
		{"clients alone", []string{"controllers", "tunnel-gateway"}, false, "", []string{"controllers", "tunnel-gateway"}, ""},
		{"a role that does not roll out stops the rest", []string{"apiserver", "controllers", "scheduler"}, false, "controllers",
			[]string{"apiserver", "controllers"}, "controllers did not roll out within 1.5s: 0 of 2 replicas updated; scheduler stay paused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rolloutTimeout = 10 * time.Second
			if c.stuck != "" {
				rolloutTimeout = 1500 * time.Millisecond
			}
			rc := newRolloutCluster(t, c.held...)
			rc.stuck = c.stuck
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go rc.control(ctx)
			var out bytes.Buffer
			asked := false
			err := (&rollout{host: rc.cs, ns: "cp", out: &out}).run(ctx, func(context.Context) (bool, error) {
				asked = true
				return c.down, nil
			})
			if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("got error %v, want %q\n%s", err, c.err, out.String())
			}
			if got := rc.names(); !slices.Equal(got, c.want) {
				t.Errorf("resumed %v, want %v", got, c.want)
			}
			if asked != slices.Contains(c.held, "apiserver") {
				t.Errorf("the apiserver's direction asked: %v, with held %v", asked, c.held)
			}
			for _, n := range c.held {
				d, _ := rc.cs.AppsV1().Deployments("cp").Get(ctx, n, metav1.GetOptions{})
				resumed := slices.Contains(c.want, n)
				if d.Spec.Paused == resumed || (d.Annotations[HeldAnnotation] == "") != resumed {
					t.Errorf("%s: paused %v, annotations %v (resumed: %v)", n, d.Spec.Paused, d.Annotations, resumed)
				}
			}
			if err == nil && !strings.Contains(out.String(), "every role rolled out") {
				t.Errorf("output:\n%s", out.String())
			}
		})
	}
}

func TestHoldRoles(t *testing.T) {
	ctx := context.Background()
	dep := func(n string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: "cp"}}
	}
	cs := fake.NewClientset(dep("apiserver"), dep("scheduler"), dep("controllers"))
	state := func(n string) (bool, string) {
		d, err := cs.AppsV1().Deployments("cp").Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Paused, d.Annotations[HeldAnnotation]
	}
	var out bytes.Buffer
	if err := holdRoles(ctx, cs, "cp", []string{"apiserver", "scheduler"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"apiserver", "scheduler"} {
		if p, a := state(n); !p || a != "true" {
			t.Errorf("%s: paused %v, held %q", n, p, a)
		}
	}
	if p, a := state("controllers"); p || a != "" {
		t.Errorf("controllers (not named) held: %v %q", p, a)
	}
	if !strings.Contains(out.String(), "held for the rollout after the upgrade: apiserver, scheduler") {
		t.Errorf("output: %s", out.String())
	}
	if err := holdRoles(ctx, cs, "cp", []string{"datastore"}, io.Discard); err == nil || !strings.Contains(err.Error(), "only apiserver, controllers, scheduler, tunnel-gateway") {
		t.Errorf("holding the datastore: %v", err)
	}
	// the gateway's Deployment is missing: the hold fails and releases controllers
	if err := holdRoles(ctx, cs, "cp", []string{"controllers", "tunnel-gateway"}, io.Discard); err == nil || !strings.Contains(err.Error(), "holding tunnel-gateway") {
		t.Errorf("holding a missing role: %v", err)
	}
	if p, a := state("controllers"); p || a != "" {
		t.Errorf("controllers still held after the hold failed: %v %q", p, a)
	}
}
