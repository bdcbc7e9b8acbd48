package box

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubesplit/kubesplit/pkg/staticpod"
	"github.com/kubesplit/kubesplit/roles"
)

// RoleStatus is one row of `kubesplit status`.
type RoleStatus struct {
	Role, Node, Image string
	// Version is the kubesplit release and Kubernetes the upstream version
	// of the role's image ("" where unknown).
	Version, Kubernetes string
	Health              string
	Restarts            string
}

// Local is the status of this box's roles from the box itself: manifest,
// image labels, local health, and restarts from the mirror pods when the
// API (api, may be nil) answers.
func (b Box) Local(ctx context.Context, api kubernetes.Interface) ([]RoleStatus, error) {
	mirrors := map[string]corev1.Pod{}
	if api != nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if pods, err := controlPlanePods(actx, api); err == nil {
			for _, p := range pods {
				mirrors[staticpod.Role(&p)] = p
			}
		}
		cancel()
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var out []RoleStatus
	for _, r := range roles.Names() {
		p, err := staticpod.Read(staticpod.File(b.Manifests, r))
		if err != nil {
			return nil, err
		}
		s := RoleStatus{Role: r, Node: "this box", Image: staticpod.Image(p), Restarts: "?"}
		if info, err := b.Image(ctx, s.Image); err == nil {
			s.Version, s.Kubernetes = info.Version, info.Kubernetes
		}
		s.Health = probe(client, roles.Wiring{}.Role(r).Ready.URL())
		if m, ok := mirrors[r]; ok {
			s.Node, s.Restarts = m.Spec.NodeName, restarts(&m)
			if m.Annotations[staticpod.AnnotationHash] != p.Annotations[staticpod.AnnotationHash] {
				s.Health += " (manifest changed, pod not yet replaced)"
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// Cluster is the status of a cluster's control plane through its API: the
// roles' mirror pods where they are static pods (boxes), else what the
// API shows of roles that run outside it (compose, processes).
func Cluster(ctx context.Context, api kubernetes.Interface) ([]RoleStatus, error) {
	pods, err := controlPlanePods(ctx, api)
	if err != nil {
		return nil, err
	}
	var out []RoleStatus
	for _, p := range pods {
		s := RoleStatus{Role: staticpod.Role(&p), Node: p.Spec.NodeName, Image: staticpod.Image(&p), Restarts: restarts(&p),
			Health: "not ready"}
		if _, tag, ok := strings.Cut(s.Image[strings.LastIndex(s.Image, "/")+1:], ":"); ok {
			s.Version = tag
		}
		if podReady(&p) {
			s.Health = "ready"
		}
		out = append(out, s)
	}
	if len(out) > 0 {
		return out, nil
	}
	// roles outside the cluster: the apiserver answers for itself, the
	// elected roles by their leases
	v, err := api.Discovery().ServerVersion()
	if err != nil {
		return nil, err
	}
	health := "ready"
	if body, err := api.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil || string(body) != "ok" {
		health = "not ready"
	}
	out = append(out, RoleStatus{Role: roles.APIServer, Node: "-", Image: "-", Kubernetes: v.GitVersion, Health: health, Restarts: "-"})
	for _, l := range []struct{ role, lease string }{{roles.Scheduler, "kube-scheduler"}, {roles.Controllers, "kube-controller-manager"}} {
		s := RoleStatus{Role: l.role, Node: "-", Image: "-", Restarts: "-", Health: "no leader"}
		lease, err := api.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, l.lease, metav1.GetOptions{})
		if err == nil && lease.Spec.HolderIdentity != nil && lease.Spec.RenewTime != nil && lease.Spec.LeaseDurationSeconds != nil &&
			time.Since(lease.Spec.RenewTime.Time) < time.Duration(*lease.Spec.LeaseDurationSeconds)*time.Second {
			holder, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_")
			s.Health, s.Node = "leader", holder
		}
		out = append(out, s)
	}
	return out, nil
}

func controlPlanePods(ctx context.Context, api kubernetes.Interface) ([]corev1.Pod, error) {
	list, err := api.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: staticpod.LabelRole})
	if err != nil {
		return nil, err
	}
	pods := list.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return slices.Index(roles.Names(), staticpod.Role(&a)) - slices.Index(roles.Names(), staticpod.Role(&b))
	})
	return pods, nil
}

func restarts(p *corev1.Pod) string {
	n := int32(0)
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return strconv.Itoa(int(n))
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func probe(client *http.Client, url string) string {
	resp, err := client.Get(url)
	if err != nil {
		var short interface{ Timeout() bool }
		if errors.As(err, &short) && short.Timeout() {
			return "not answering (timeout)"
		}
		return "down"
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "not ready (" + resp.Status + ")"
	}
	return "ready"
}

// Print writes statuses as a table.
func Print(w io.Writer, rows []RoleStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tNODE\tIMAGE\tVERSION\tKUBERNETES\tHEALTH\tRESTARTS")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Role, r.Node, r.Image, dash(r.Version), dash(r.Kubernetes), r.Health, r.Restarts)
	}
	return tw.Flush()
}
