package servicelb

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/pkg/servicelb"
)

const image = "kubesplit/servicelb:test"

func lbService(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.43.0.50", Ports: ports,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster},
	}
}

func TestRenderDaemonSet(t *testing.T) {
	t.Parallel()
	svc := lbService("shop", "web",
		corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		corev1.ServicePort{Name: "sig", Port: 9, Protocol: corev1.ProtocolSCTP})
	svc.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24", " 198.51.100.7/32"}
	ports, skipped := forwardedPorts(svc)
	if len(ports) != 2 || len(skipped) != 1 || skipped[0].Port != 9 {
		t.Fatalf("ports %v, skipped %v: want TCP 80 and UDP 53, SCTP 9 skipped", ports, skipped)
	}
	ds := renderDaemonSet(svc, ports, image, false)
	if ds.Namespace != "kube-system" || !strings.HasPrefix(ds.Name, "svclb-web-") {
		t.Errorf("DaemonSet %s/%s", ds.Namespace, ds.Name)
	}
	if key, ok := serviceKey(ds.Labels); !ok || key != "shop/web" {
		t.Errorf("labels %v do not name the Service", ds.Labels)
	}
	if len(ds.OwnerReferences) != 0 {
		t.Error("an owner reference across namespaces is not honoured by the garbage collector: labels only")
	}
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != image || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	var hostPorts []string
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			hostPorts = append(hostPorts, string(p.Protocol)+"/"+itoa(p.HostPort)+"->"+itoa(p.ContainerPort))
		}
	}
	if want := []string{"TCP/80->10201", "UDP/53->10202"}; !slices.Equal(hostPorts, want) {
		t.Errorf("host ports %v, want %v", hostPorts, want)
	}
	spec, err := servicelb.Parse(c.Args, io.Discard)
	if err != nil {
		t.Fatalf("the forwarder would not parse its arguments %q: %v", c.Args, err)
	}
	if spec.ClusterIP != "10.43.0.50" || spec.Local || len(spec.Ports) != 2 || spec.Ports[1] != (servicelb.Port{Protocol: "UDP", Listen: 10202, Port: 53}) {
		t.Errorf("forwarder spec %+v", spec)
	}
	if got := spec.SourceRanges; len(got) != 2 || got[1].String() != "198.51.100.7/32" {
		t.Errorf("source ranges %v", got)
	}
	sc := c.SecurityContext
	if !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		pod.HostNetwork || *pod.AutomountServiceAccountToken || len(sc.Capabilities.Add) != 0 {
		t.Errorf("the forwarder must run unprivileged, non-root, without API credentials: %+v", sc)
	}
	req := pod.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0]
	if req.Key != NodeLabel || req.Operator != corev1.NodeSelectorOpNotIn || req.Values[0] != "false" {
		t.Errorf("without opt-in nodes: %+v, want %s NotIn [false]", req, NodeLabel)
	}
	in := renderDaemonSet(svc, ports, image, true).Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0]
	if in.Operator != corev1.NodeSelectorOpIn || in.Values[0] != "true" {
		t.Errorf("with opt-in nodes: %+v, want %s In [true]", in, NodeLabel)
	}
	if renderDaemonSet(svc, ports, image, true).Annotations[hashAnnotation] == ds.Annotations[hashAnnotation] {
		t.Error("an opt-in change must change the template hash (and so update the DaemonSet)")
	}
}

func TestRenderLocal(t *testing.T) {
	t.Parallel()
	svc := lbService("default", "web")
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	ports, _ := forwardedPorts(svc)
	ds := renderDaemonSet(svc, ports, image, false)
	c := ds.Spec.Template.Spec.Containers[0]
	spec, err := servicelb.Parse(c.Args, io.Discard)
	if err != nil || !spec.Local || spec.EndpointsFile != "/etc/servicelb/endpoints" {
		t.Fatalf("Local forwarder spec %+v, %v", spec, err)
	}
	v := ds.Spec.Template.Spec.Volumes
	if len(v) != 1 || v[0].DownwardAPI == nil || !strings.Contains(v[0].DownwardAPI.Items[0].FieldRef.FieldPath, servicelb.EndpointsAnnotation) ||
		len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/servicelb" {
		t.Errorf("the endpoints annotation must reach the forwarder as a file: volumes %+v mounts %+v", v, c.VolumeMounts)
	}
}

func TestDaemonSetNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 63)
	names := map[string]bool{}
	for _, k := range [][2]string{{"a", "web"}, {"b", "web"}, {"a", long}, {"b", long}} {
		n := daemonSetName(k[0], k[1])
		if len(n) > 63 || strings.Contains(n, "--") || names[n] {
			t.Errorf("daemonSetName(%s, %s) = %q: want unique, at most 63 characters", k[0], k[1], n)
		}
		names[n] = true
	}
}

func TestServes(t *testing.T) {
	t.Parallel()
	other := "example.com/metal"
	for name, tc := range map[string]struct {
		mod  func(*corev1.Service)
		want bool
	}{
		"no class":       {func(*corev1.Service) {}, true},
		"our class":      {func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To(Class) }, true},
		"another class":  {func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other }, false},
		"ClusterIP type": {func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }, false},
		"being deleted":  {func(s *corev1.Service) { s.DeletionTimestamp = &metav1.Time{} }, false},
	} {
		s := lbService("default", "web")
		tc.mod(s)
		if got := serves(s); got != tc.want {
			t.Errorf("%s: serves = %v, want %v", name, got, tc.want)
		}
	}
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }
