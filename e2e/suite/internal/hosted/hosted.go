// Package hosted drives the hosted-control-plane chart (deploy/helm) on a
// testcluster host with the real helm CLI, for the e2e scenario and the
// benchmark: install a release, read what its init Job kept in the PKI
// Secret, reach the hosted cluster at its public address and join a node
// container to it.
package hosted

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/roles"
	"github.com/kubesplit/kubesplit/testcluster"
)

// Chart is the chart's path from e2e/suite.
const Chart = "../../deploy/helm"

// Images are the images a host's nodes need to run the chart at tag.
func Images(tag string) []string {
	var out []string
	for _, r := range append(roles.Names(), "kubesplit") {
		out = append(out, "kubesplit/"+r+":"+tag)
	}
	return out
}

// Helm runs the helm CLI against the host.
type Helm struct {
	Bin, Kubeconfig string
}

// Run runs helm with args (and the host's kubeconfig) and returns its output.
func (h Helm) Run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, h.Bin, append(args, "--kubeconfig", h.Kubeconfig)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Install installs release "cp" into ns (created) with image tag and the
// --set values; wait adds --wait.
func (h Helm) Install(ctx context.Context, ns, tag string, wait bool, set ...string) error {
	args := []string{"install", "cp", Chart, "-n", ns, "--create-namespace", "--set", "image.tag=" + tag}
	if wait {
		args = append(args, "--wait", "--timeout", "6m")
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	_, err := h.Run(ctx, args...)
	return err
}

// Release is what a release's init Job kept in its PKI Secret.
type Release struct {
	Address, Token string
	Admin          []byte
}

// Read reads ns's PKI Secret (kubesplit-pki).
func Read(ctx context.Context, host kubernetes.Interface, ns string) (Release, error) {
	sec, err := host.CoreV1().Secrets(ns).Get(ctx, "kubesplit-pki", metav1.GetOptions{})
	if err != nil {
		return Release{}, err
	}
	r := Release{Address: string(sec.Data["config__public-address"]), Token: string(sec.Data["config__node-token"]), Admin: sec.Data["admin.kubeconfig"]}
	// (an IP, or the release's name behind a shared SNI router)
	if r.Address == "" || r.Token == "" || len(r.Admin) == 0 {
		return r, fmt.Errorf("Secret %s/kubesplit-pki: public address %q, token set %v, admin kubeconfig %d bytes", ns, r.Address, r.Token != "", len(r.Admin))
	}
	return r, nil
}

// Client is the hosted cluster's admin client, at the public address.
func (r Release) Client() (*rest.Config, kubernetes.Interface, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(r.Admin)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	return cfg, cs, err
}

// Join starts a node container on the host's node network that joins the
// hosted cluster through the gateway's public Service (port nodesPort).
func (r Release) Join(ctx context.Context, c *testcluster.Cluster, nodesPort int) (string, error) {
	return c.JoinNode(ctx, "https://"+net.JoinHostPort(r.Address, strconv.Itoa(nodesPort)), r.Token)
}

// WaitReady polls until cond holds or timeout, returning cond's last reason.
func WaitReady(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// NodeReady reports whether node is Ready in cs.
func NodeReady(ctx context.Context, cs kubernetes.Interface, node string) (bool, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue, fmt.Errorf("Ready %s: %s", cond.Status, cond.Message)
		}
	}
	return false, fmt.Errorf("no Ready condition")
}

// APIReady reports whether the hosted apiserver answers /readyz at the public address.
func APIReady(ctx context.Context, cs kubernetes.Interface) (bool, error) {
	_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err == nil, err
}

// Postgres runs kubesplit/postgres:tag in namespace ns of the host (created
// if missing) behind the Service "postgres" and keeps its DSN in the Secret
// "pg" (key dsn), for datastore.mode=external. It returns the password.
func Postgres(ctx context.Context, host kubernetes.Interface, ns, tag string) (string, error) {
	if _, err := host.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return "", err
	}
	password := hex.EncodeToString(pw)
	labels := map[string]string{"app": "postgres"}
	pg := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{FSGroup: ptr.To[int64](999)},
					Containers: []corev1.Container{{Name: "postgres", Image: "kubesplit/postgres:" + tag, ImagePullPolicy: corev1.PullNever,
						// initdb wants a PGDATA it creates itself (owned by it, 0700), not the volume's root
						Env: []corev1.EnvVar{{Name: "POSTGRES_USER", Value: "kubesplit"}, {Name: "POSTGRES_PASSWORD", Value: password},
							{Name: "PGDATA", Value: "/var/lib/postgresql/data/pg"}},
						Ports:        []corev1.ContainerPort{{ContainerPort: 5432}},
						VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"}}}},
					Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
	if _, err := host.AppsV1().Deployments(ns).Create(ctx, pg, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if _, err := host.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "postgres"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 5432}}}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	dsn := "postgres://kubesplit:" + password + "@postgres:5432/kubesplit?sslmode=disable"
	_, err := host.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pg"},
		StringData: map[string]string{"dsn": dsn}}, metav1.CreateOptions{})
	return password, err
}
