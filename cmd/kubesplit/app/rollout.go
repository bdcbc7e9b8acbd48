package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/roles"
)

// HeldAnnotation marks a role's Deployment the chart's pre-upgrade check
// paused because the upgrade changes more than one role: the post-upgrade
// rollout Job resumes them one at a time (deploy/helm/templates/rollout.yaml).
const HeldAnnotation = "kubesplit.io/held"

// upgradeOrder is the order roles roll in when the apiserver stays or moves
// up: the apiserver first, then its clients (the version-skew policy lets
// them be older than the apiserver, never newer). The datastore is not in it:
// the chart never holds it, so it rolls first, on Helm's own apply.
var upgradeOrder = []string{roles.APIServer, roles.Controllers, roles.Scheduler, roles.TunnelGateway}

// rolloutOrder orders the held roles: upgradeOrder, or its reverse when the
// apiserver moves to an older minor (its clients must go down first).
func rolloutOrder(held []string, apiserverDown bool) []string {
	order := slices.Clone(upgradeOrder)
	if apiserverDown {
		slices.Reverse(order)
	}
	var out []string
	for _, r := range order {
		if slices.Contains(held, r) {
			out = append(out, r)
		}
	}
	return out
}

// deploymentRolledOut says whether a Deployment's rollout is complete (the
// rule of `kubectl rollout status`): the controller saw the latest spec,
// every replica runs the new template and is available, no old one is
// left. A rollout past its progress deadline is an error.
func deploymentRolledOut(d *appsv1.Deployment) (bool, string, error) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, "", fmt.Errorf("deployment %s exceeded its progress deadline: %s", d.Name, c.Message)
		}
	}
	s := d.Status
	switch {
	case d.Spec.Paused:
		return false, "paused", nil
	case s.ObservedGeneration < d.Generation:
		return false, "the controller has not seen the new spec yet", nil
	case s.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want), nil
	case s.Replicas > s.UpdatedReplicas:
		return false, fmt.Sprintf("%d old replicas still running", s.Replicas-s.UpdatedReplicas), nil
	case s.AvailableReplicas < s.UpdatedReplicas:
		return false, fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas), nil
	}
	return true, "", nil
}

// statefulSetRolledOut is the same for a StatefulSet (the chart's datastore).
func statefulSetRolledOut(s *appsv1.StatefulSet) (bool, string) {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	switch {
	case st.ObservedGeneration < s.Generation:
		return false, "the controller has not seen the new spec yet"
	case st.UpdatedReplicas < want || st.CurrentRevision != st.UpdateRevision:
		return false, fmt.Sprintf("%d of %d members updated", st.UpdatedReplicas, want)
	case st.ReadyReplicas < want:
		return false, fmt.Sprintf("%d of %d members ready", st.ReadyReplicas, want)
	}
	return true, ""
}

// How long one role may take to roll out, and how often it is looked at.
var (
	rolloutTimeout = 10 * time.Minute
	rolloutPoll    = time.Second
)

func upgradeRolloutCommand() *cobra.Command {
	var secret, pod, server string
	cmd := &cobra.Command{
		Use:   "upgrade-rollout --secret NAMESPACE/NAME --pod NAME",
		Short: "In the Helm chart's post-upgrade hook: roll the held roles one at a time, in the version-skew policy's order",
		Long: `upgrade-rollout runs in the hosted-control-plane chart's post-upgrade Job
(deploy/helm) when one upgrade changes several roles. The pre-upgrade check
paused each changed role's Deployment (annotation ` + HeldAnnotation + `), so none
of them rolled with Helm's apply; the datastore, never held, rolled first.
upgrade-rollout waits for what is rolling, then resumes the held roles one at a
time and waits for each to be rolled out before the next: the apiserver first,
then the controllers, the scheduler and the tunnel gateway; in the reverse
order when the apiserver moves to an older minor (its version comes from the
Job's new-apiserver init container, the running one from the hosted API).
If a role does not roll out, it stops with the reason and the roles after it
stay paused on their old version.`,
		Example: `  # in the chart's post-upgrade Job (POD_NAME from the downward API)
  kubesplit upgrade-rollout --secret cp1/kubesplit-pki --pod $POD_NAME --server https://apiserver:6443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, ns, name, err := upgradeJobClient(secret, pod)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			r := &rollout{host: host, ns: ns, out: out}
			return r.run(ctxOf(cmd), func(ctx context.Context) (bool, error) {
				return apiserverGoesDown(ctx, host, ns, name, pod, server, out)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&secret, "secret", "", "NAMESPACE/NAME of the PKI Secret (its admin kubeconfig reaches the hosted cluster); the roles' Deployments are in the same namespace")
	f.StringVar(&pod, "pod", os.Getenv("POD_NAME"), "this pod's name (its new-apiserver init container printed the next apiserver's version)")
	f.StringVar(&server, "server", "https://apiserver:6443", "the hosted apiserver's URL from where this runs (default: the chart's Service)")
	return cmd
}

type rollout struct {
	host kubernetes.Interface
	ns   string
	out  io.Writer
}

// run rolls the held roles one at a time; apiserverDown is asked when the
// apiserver is among them.
func (r *rollout) run(ctx context.Context, apiserverDown func(context.Context) (bool, error)) error {
	if err := r.waitUnheld(ctx); err != nil {
		return err
	}
	held, err := r.held(ctx)
	if err != nil {
		return err
	}
	if len(held) == 0 {
		fmt.Fprintln(r.out, "no role is held: nothing to roll")
		return nil
	}
	down := false
	if slices.Contains(held, roles.APIServer) {
		if down, err = apiserverDown(ctx); err != nil {
			return err
		}
	}
	order := rolloutOrder(held, down)
	fmt.Fprintf(r.out, "rolling out one at a time: %s\n", strings.Join(order, ", "))
	for i, role := range order {
		if err := r.resume(ctx, role); err != nil {
			if rest := order[i+1:]; len(rest) > 0 {
				err = fmt.Errorf("%w; %s stay paused on their old version (fix it, then helm upgrade again)", err, strings.Join(rest, ", "))
			}
			return err
		}
	}
	fmt.Fprintln(r.out, "every role rolled out")
	return nil
}

// waitUnheld waits for the roles that are rolling on Helm's own apply (the
// datastore, any role not held) to be rolled out: a held role is resumed
// only on a settled control plane. (With helm --wait they are already.)
func (r *rollout) waitUnheld(ctx context.Context) error {
	for _, name := range append([]string{roles.Datastore}, upgradeOrder...) {
		began := time.Now()
		reported := false
		err := r.poll(ctx, name, func(ctx context.Context) (bool, string, error) {
			// the datastore is a StatefulSet, or a Deployment (external)
			if name == roles.Datastore {
				if s, err := r.host.AppsV1().StatefulSets(r.ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
					done, why := statefulSetRolledOut(s)
					return done, why, nil
				} else if !apierrors.IsNotFound(err) {
					return false, "", err
				}
			}
			d, err := r.host.AppsV1().Deployments(r.ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) || (err == nil && d.Spec.Paused) {
				return true, "", nil // not part of this release, or held
			}
			if err != nil {
				return false, "", err
			}
			done, why, err := deploymentRolledOut(d)
			if !done && err == nil && !reported {
				fmt.Fprintf(r.out, "waiting for %s (not held) to roll out first: %s\n", name, why)
				reported = true
			}
			return done, why, err
		})
		if err != nil {
			return err
		}
		if reported {
			fmt.Fprintf(r.out, "%s rolled out (%v)\n", name, time.Since(began).Round(100*time.Millisecond))
		}
	}
	return nil
}

// held lists the roles the pre-upgrade check paused.
func (r *rollout) held(ctx context.Context) ([]string, error) {
	var held []string
	for _, name := range upgradeOrder {
		d, err := r.host.AppsV1().Deployments(r.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading deployment %s/%s: %w", r.ns, name, err)
		}
		if d.Spec.Paused && d.Annotations[HeldAnnotation] == "true" {
			held = append(held, name)
		}
	}
	return held, nil
}

// holdRoles pauses the named roles' Deployments and marks them held, for
// the post-upgrade rollout. Pausing is the Deployment's own switch: Helm then
// applies their new template without a rollout. If one cannot be held, the
// ones held already are released and the upgrade stops.
func holdRoles(ctx context.Context, host kubernetes.Interface, ns string, names []string, out io.Writer) error {
	for _, n := range names {
		if !slices.Contains(upgradeOrder, n) {
			return fmt.Errorf("--hold %s: only %s are held", n, strings.Join(upgradeOrder, ", "))
		}
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{HeldAnnotation: "true"}},
		"spec":     map[string]any{"paused": true},
	})
	for i, n := range names {
		if _, err := host.AppsV1().Deployments(ns).Patch(ctx, n, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			r := &rollout{host: host, ns: ns, out: io.Discard}
			for _, done := range names[:i] {
				_ = r.release(ctx, done)
			}
			return fmt.Errorf("holding %s for a one-at-a-time rollout: %w", n, err)
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(out, "held for the rollout after the upgrade: %s\n", strings.Join(names, ", "))
	}
	return nil
}

// release un-pauses a role and drops its held mark.
func (r *rollout) release(ctx context.Context, name string) error {
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{HeldAnnotation: nil}},
		"spec":     map[string]any{"paused": false},
	})
	_, err := r.host.AppsV1().Deployments(r.ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// resume un-pauses one held role and waits until it is rolled out.
func (r *rollout) resume(ctx context.Context, name string) error {
	began := time.Now()
	if err := r.release(ctx, name); err != nil {
		return fmt.Errorf("resuming %s: %w", name, err)
	}
	fmt.Fprintf(r.out, "resumed %s\n", name)
	if err := r.poll(ctx, name, func(ctx context.Context) (bool, string, error) {
		d, err := r.host.AppsV1().Deployments(r.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		return deploymentRolledOut(d)
	}); err != nil {
		return err
	}
	fmt.Fprintf(r.out, "%s rolled out (%v)\n", name, time.Since(began).Round(100*time.Millisecond))
	return nil
}

// poll calls f until it is done, fails, or rolloutTimeout passes; a timeout
// says what was still missing.
func (r *rollout) poll(ctx context.Context, name string, f func(context.Context) (bool, string, error)) error {
	var why string
	err := wait.PollUntilContextTimeout(ctx, rolloutPoll, rolloutTimeout, true, func(ctx context.Context) (bool, error) {
		done, w, err := f(ctx)
		switch {
		case err == nil:
			why = w
			return done, nil
		case apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || strings.Contains(err.Error(), "progress deadline"):
			return false, fmt.Errorf("%s: %w", name, err)
		default:
			why = err.Error() // transient: the host API may blink
			return false, nil
		}
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("%s did not roll out within %v: %s", name, rolloutTimeout, why)
	}
	return err
}

// apiserverGoesDown compares the next apiserver's version (the pod's
// new-apiserver init container) with the running one's (the hosted API's
// /version). When the running one cannot be read, the upgrade order is kept:
// a broken apiserver is best replaced first.
func apiserverGoesDown(ctx context.Context, host kubernetes.Interface, ns, secret, pod, server string, out io.Writer) (bool, error) {
	_, next, err := podVersions(ctx, host, ns, pod)
	if err != nil {
		return false, err
	}
	nv, ok := next[roles.APIServer]
	if !ok {
		return false, fmt.Errorf("pod %s/%s has no %s%s init container", ns, pod, newPrefix, roles.APIServer)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	running, err := hostedAPIServerVersion(cctx, host, ns, secret, server)
	if err != nil {
		fmt.Fprintf(out, "warning: the running apiserver's version is unknown (%v): the apiserver goes first\n", err)
		return false, nil
	}
	cur, err1 := version.ParseMinor(running)
	nm, err2 := version.ParseMinor(nv)
	if err := errors.Join(err1, err2); err != nil {
		return false, err
	}
	down := nm.Major < cur.Major || (nm.Major == cur.Major && nm.Minor < cur.Minor)
	fmt.Fprintf(out, "apiserver %s -> %s\n", running, nv)
	return down, nil
}

// hostedAPIServerVersion asks the hosted apiserver for its version, retrying
// until ctx ends.
func hostedAPIServerVersion(ctx context.Context, host kubernetes.Interface, ns, secret, server string) (string, error) {
	cs, err := hostedClient(ctx, host, ns, secret, server)
	if err != nil {
		return "", err
	}
	var v string
	var last error
	err = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(context.Context) (bool, error) {
		info, err := cs.Discovery().ServerVersion()
		if err != nil {
			last = err
			return false, nil
		}
		v = info.GitVersion
		return true, nil
	})
	if err != nil && last != nil {
		return "", last
	}
	return v, err
}
