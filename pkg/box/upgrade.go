package box

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubesplit/kubesplit/pkg/skew"
	"github.com/kubesplit/kubesplit/pkg/staticpod"
	"github.com/kubesplit/kubesplit/roles"
)

// Upgrade is one `kubesplit upgrade ROLE --image IMAGE`.
type Upgrade struct {
	Role, Image string
	// DryRun prints the manifest's diff and the checks' verdict, and changes nothing.
	DryRun bool
	// Timeout bounds the wait for the role's health on its new image; past
	// it, the previous manifest is put back.
	Timeout time.Duration
	// Kubelets are the Kubernetes versions of the cluster's kubelets (from
	// the API, when it answers); the box's own is always checked.
	Kubelets map[string]string
	Out      io.Writer
}

// Refusal is an upgrade refused before anything changed.
type Refusal struct{ Reason string }

func (r Refusal) Error() string { return r.Reason + "; nothing was changed" }

// Upgrade checks, snapshots, writes the role's new manifest and waits for
// the role's own health on the box; it puts the previous manifest back if
// the role is not healthy within u.Timeout.
func (b Box) Upgrade(ctx context.Context, u Upgrade) error {
	if !roles.Valid(u.Role) {
		return fmt.Errorf("unknown role %q: want one of %s", u.Role, strings.Join(roles.Names(), ", "))
	}
	path := staticpod.File(b.Manifests, u.Role)
	oldBytes, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no manifest %s: this is not a control-plane box (kubesplit-node agent --control-plane), or give --manifests-dir", path)
	}
	if err != nil {
		return err
	}
	cur, err := staticpod.Read(path)
	if err != nil {
		return err
	}
	want, err := Normalize(u.Image)
	if err != nil {
		return Refusal{err.Error()}
	}
	if have, _ := Normalize(staticpod.Image(cur)); have == want {
		return Refusal{fmt.Sprintf("%s runs %s already", u.Role, u.Image)}
	}
	next := cur.DeepCopy()
	staticpod.SetImage(next, u.Image)
	newBytes, err := staticpod.Marshal(next)
	if err != nil {
		return err
	}
	if err := b.checkUpgrade(ctx, u); err != nil {
		if u.DryRun {
			fmt.Fprintf(u.Out, "would be refused: %v\n", err)
		}
		return err
	}
	if u.DryRun {
		diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: difflib.SplitLines(string(oldBytes)),
			B: difflib.SplitLines(string(newBytes)), FromFile: path, ToFile: path + " (new)", Context: 2})
		fmt.Fprint(u.Out, diff)
		fmt.Fprintf(u.Out, "checks passed; run without --dry-run to upgrade %s\n", u.Role)
		return nil
	}
	if u.Role == roles.Datastore || u.Role == roles.APIServer {
		file, err := b.snapshotBefore(ctx, u.Role)
		if err != nil {
			return fmt.Errorf("datastore snapshot before the %s upgrade failed, nothing was changed: %w", u.Role, err)
		}
		if file != "" {
			fmt.Fprintf(u.Out, "datastore snapshot: %s\n", file)
		}
	}
	if err := staticpod.KeepPrevious(path); err != nil {
		return err
	}
	if u.Role == roles.Datastore {
		return b.withAPIServerStopped(ctx, u, func() error { return b.swap(ctx, u, path, cur, oldBytes, newBytes) })
	}
	return b.swap(ctx, u, path, cur, oldBytes, newBytes)
}

// withAPIServerStopped runs a datastore swap with the apiserver's manifest
// parked, then starts the apiserver again and waits for its health. While
// the datastore is down, every API call the kubelet makes for the
// datastore's mirror pod would hang until the apiserver gave up (about
// 35 s, twice: the old mirror pod's deletion, the new one's creation),
// and the new datastore would wait for them: 51-53 s from command to
// healthy. With no apiserver those calls fail at once, as a restore's do.
func (b Box) withAPIServerStopped(ctx context.Context, u Upgrade, swap func() error) error {
	start := time.Now()
	api := staticpod.File(b.Manifests, roles.APIServer)
	if err := staticpod.Park(api); err != nil {
		return err
	}
	err := b.waitStopped(ctx, roles.APIServer, u.Timeout)
	if err == nil {
		fmt.Fprintf(u.Out, "apiserver stopped for the datastore's swap after %s\n", time.Since(start).Round(100*time.Millisecond))
		err = swap()
	} else {
		err = fmt.Errorf("the apiserver did not stop, nothing was changed: %w", err)
	}
	if uerr := staticpod.Unpark(api); uerr != nil {
		return errors.Join(err, fmt.Errorf("could not start the apiserver again (the agent's next start does): %w", uerr))
	}
	if herr := b.waitHealthy(ctx, roles.APIServer, u.Timeout); herr != nil {
		return errors.Join(err, fmt.Errorf("the apiserver is not healthy again within %s: %w", u.Timeout, herr))
	}
	fmt.Fprintf(u.Out, "apiserver healthy again after %s\n", time.Since(start).Round(100*time.Millisecond))
	return err
}

// swap replaces a role's manifest with newBytes and waits for the role's
// health, and puts oldBytes back when it does not come.
func (b Box) swap(ctx context.Context, u Upgrade, path string, cur *corev1.Pod, oldBytes, newBytes []byte) error {
	start := time.Now()
	if err := b.replace(ctx, u, path, newBytes); err != nil {
		return err
	}
	fmt.Fprintf(u.Out, "%s: previous pod gone after %s; manifest replaced (%s → %s; previous kept in %s), waiting for its health\n",
		u.Role, time.Since(start).Round(100*time.Millisecond), staticpod.Image(cur), u.Image, staticpod.PreviousDir(b.Manifests))
	werr := b.waitHealthy(ctx, u.Role, u.Timeout)
	if werr == nil {
		fmt.Fprintf(u.Out, "%s healthy on %s after %s\n", u.Role, u.Image, time.Since(start).Round(100*time.Millisecond))
		return nil
	}
	// roll back: the previous file as it was, byte for byte
	if err := b.replace(ctx, u, path, oldBytes); err != nil {
		return fmt.Errorf("%s did not become healthy on %s (%v), and putting the previous manifest back failed: %w", u.Role, u.Image, werr, err)
	}
	back := b.waitHealthy(ctx, u.Role, u.Timeout)
	state := "healthy again"
	if back != nil {
		state = "not healthy yet: " + back.Error()
	}
	return fmt.Errorf("%s did not become healthy on %s within %s (%v): the previous manifest is back, %s runs %s, %s",
		u.Role, u.Image, u.Timeout, werr, u.Role, staticpod.Image(cur), state)
}

// replace swaps a role's manifest for data (staticpod.Stage, Park, Commit):
// the kubelet stops the old pod at once; once no container of the role runs
// and the old pod is completely gone (podcgroup.go), the new manifest is
// written, and the kubelet starts it at once.
func (b Box) replace(ctx context.Context, u Upgrade, path string, data []byte) error {
	role, timeout := u.Role, u.Timeout
	if err := staticpod.Stage(path, data); err != nil {
		return err
	}
	// the pods to see gone (none known: only the containers are waited for)
	uids, _ := b.PodUIDs(ctx, role)
	if err := staticpod.Park(path); err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ids, err := b.Containers(gctx, role)
		if err == nil && len(ids) == 0 && len(podCgroupsLeft(uids)) == 0 {
			break
		}
		select {
		case <-gctx.Done():
			// start the new pod anyway: the kubelet starts it once the old one is gone
			fmt.Fprintf(u.Out, "%s's previous pod is not gone within %s; going on\n", role, timeout)
			return staticpod.Commit(path)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return staticpod.Commit(path)
}

// checkUpgrade refuses an image that is missing, of another role, or that
// the version-skew policy forbids next to the running roles and kubelets.
func (b Box) checkUpgrade(ctx context.Context, u Upgrade) error {
	info, err := b.Image(ctx, u.Image)
	var missing ErrNoImage
	if errors.As(err, &missing) {
		return Refusal{missing.Error()}
	}
	if err != nil {
		return err
	}
	if info.Role != u.Role {
		return Refusal{fmt.Sprintf("%s is a kubesplit %q image, not %s", u.Image, info.Role, u.Role)}
	}
	if info.Kubernetes == "" {
		return Refusal{fmt.Sprintf("%s does not say its Kubernetes version (label io.kubesplit.kubernetes-version)", u.Image)}
	}
	running := map[string]string{}
	for _, r := range roles.Names() {
		p, err := staticpod.Read(staticpod.File(b.Manifests, r))
		if err != nil {
			return err
		}
		ri, err := b.Image(ctx, staticpod.Image(p))
		if err != nil {
			return fmt.Errorf("the running %s's image: %w", r, err)
		}
		running[r] = ri.Kubernetes
	}
	kubelets := map[string]string{}
	for n, v := range u.Kubelets {
		kubelets[n] = v
	}
	if v, err := boxKubelet(ctx); err == nil {
		kubelets["this box"] = v
	}
	return skewAfter(u.Role, info.Kubernetes, running, kubelets)
}

// skewAfter is skew.After for one role, as a Refusal.
func skewAfter(role, v string, running, kubelets map[string]string) error {
	if err := skew.After(map[string]string{role: v}, running, kubelets); err != nil {
		return Refusal{err.Error()}
	}
	return nil
}

// boxKubelet is the Kubernetes version of this box's kubelet (the agent's).
func boxKubelet(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "kubesplit-node", "version").Output()
	if err != nil {
		return "", err
	}
	// "kubesplit node v0.1.0 (kubernetes v1.36.3)"
	s := string(out)
	i := strings.Index(s, "(kubernetes ")
	if i < 0 {
		return "", fmt.Errorf("kubesplit-node version: %q", s)
	}
	return strings.TrimSuffix(strings.TrimSpace(s[i+len("(kubernetes "):]), ")"), nil
}

// waitHealthy waits until a container of role runs and the role's health
// answers 200 three times in a row: the role's own health on the box, not
// the API (which is down while the apiserver changes).
func (b Box) waitHealthy(ctx context.Context, role string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := roles.Wiring{}.Role(role).Ready.URL()
	client := &http.Client{Timeout: 2 * time.Second}
	ok, last := 0, error(nil)
	for {
		ids, err := b.Containers(ctx, role)
		switch {
		case err != nil:
			last, ok = err, 0
		case len(ids) == 0:
			last, ok = errors.New("no container runs"), 0
		default:
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s: %s", url, resp.Status)
				}
			}
			if err != nil {
				last, ok = err, 0
			} else if ok++; ok == 3 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("last: %v", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// hostDataDir is the data directory's host path and mount path in a manifest.
func hostDataDir(p *corev1.Pod) (host, mount string) {
	for _, v := range p.Spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		for _, m := range p.Spec.Containers[0].VolumeMounts {
			if m.Name == v.Name {
				return v.HostPath.Path, m.MountPath
			}
		}
	}
	return "", ""
}
