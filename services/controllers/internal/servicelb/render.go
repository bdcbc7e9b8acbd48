// Package servicelb is ServiceLB, the controllers' implementation of
// `type: LoadBalancer` on the nodes' own addresses (k3s's klipper-lb idea,
// written here): for each LoadBalancer Service without a
// spec.loadBalancerClass, or with Class, it runs a DaemonSet of forwarders
// (package github.com/kubesplit/kubesplit/pkg/servicelb, image
// kubesplit/servicelb) in kube-system whose pods publish the Service's ports
// as hostPorts, and writes the addresses of the nodes with a ready
// forwarder into status.loadBalancer.ingress, with ipMode Proxy so that
// kube-proxy leaves the node addresses to the forwarders.
package servicelb

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/pkg/servicelb"
)

const (
	// Name is the addon's name: --disable servicelb, image kubesplit/servicelb.
	Name = "servicelb"
	// Class is the spec.loadBalancerClass served besides none.
	Class = "kubesplit.io/servicelb"
	// NodeLabel opts nodes in and out: while any node has it "true", only
	// those nodes serve; "false" keeps a node out.
	NodeLabel = "kubesplit.io/servicelb"
	// Namespace holds the forwarders' DaemonSets and the lease.
	Namespace = "kube-system"
	// LeaseName is the Lease that elects one controllers replica to run ServiceLB.
	LeaseName = "kubesplit-servicelb"

	managedByLabel   = "app.kubernetes.io/managed-by"
	managedBy        = "kubesplit-servicelb"
	serviceLabel     = "kubesplit.io/servicelb-service"   // the Service's name
	namespaceLabel   = "kubesplit.io/servicelb-namespace" // and namespace
	hashAnnotation   = "kubesplit.io/servicelb-hash"      // of the rendered pod template
	healthPort       = 10200
	firstListenPort  = 10201
	endpointsDir     = "/etc/servicelb"
	endpointsFile    = "endpoints"
	endpointsVolume  = "endpoints"
	forwarderUser    = 65532
	forwarderName    = "forwarder"
	priorityClass    = "system-node-critical"
	unsupportedProto = "UnsupportedProtocol"
)

// serves says whether ServiceLB is the Service's load balancer.
func serves(svc *corev1.Service) bool {
	return svc != nil && svc.DeletionTimestamp == nil && svc.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		(svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == Class) &&
		svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone
}

func local(svc *corev1.Service) bool {
	return svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

// daemonSetName is derived from the Service: its name, cut to fit, and a
// hash of namespace/name, so Services of the same name in two namespaces
// get two DaemonSets.
func daemonSetName(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	base := "svclb-" + name
	if len(base) > 54 {
		base = strings.TrimRight(base[:54], "-")
	}
	return base + "-" + hex.EncodeToString(sum[:4])
}

func ownerLabels(namespace, name string) map[string]string {
	return map[string]string{managedByLabel: managedBy, namespaceLabel: namespace, serviceLabel: name}
}

// serviceKey is the namespace/name of the Service an object of ours is for.
func serviceKey(labels map[string]string) (string, bool) {
	ns, name := labels[namespaceLabel], labels[serviceLabel]
	if labels[managedByLabel] != managedBy || ns == "" || name == "" {
		return "", false
	}
	return ns + "/" + name, true
}

// forwarded is a Service port and the forwarder's port for it.
type forwarded struct {
	svc corev1.ServicePort
	lb  servicelb.Port
}

// forwardedPorts are the Service's TCP and UDP ports, each with its own
// listen port in the forwarder's pod; skipped are the others (SCTP).
func forwardedPorts(svc *corev1.Service) (ports []forwarded, skipped []corev1.ServicePort) {
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
			skipped = append(skipped, p)
			continue
		}
		p.Protocol = proto
		ports = append(ports, forwarded{svc: p, lb: servicelb.Port{Protocol: string(proto), Listen: firstListenPort + len(ports), Port: int(p.Port)}})
	}
	return ports, skipped
}

// renderDaemonSet is the forwarders' DaemonSet for svc. optIn is whether
// some node has NodeLabel=true (then only those nodes serve).
func renderDaemonSet(svc *corev1.Service, ports []forwarded, image string, optIn bool) *appsv1.DaemonSet {
	spec := servicelb.Spec{Service: svc.Namespace + "/" + svc.Name, ClusterIP: svc.Spec.ClusterIP, Local: local(svc), HealthPort: healthPort}
	c := corev1.Container{
		Name: forwarderName, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
		Ports: []corev1.ContainerPort{{Name: "health", ContainerPort: healthPort, Protocol: corev1.ProtocolTCP}},
		ReadinessProbe: &corev1.Probe{PeriodSeconds: 2, FailureThreshold: 2,
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("health")}}},
		LivenessProbe: &corev1.Probe{PeriodSeconds: 10, FailureThreshold: 3,
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("health")}}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		// hostPort needs no privilege in the pod: portmap DNATs on the
		// node to the pod's unprivileged listen ports
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](forwarderUser), RunAsGroup: ptr.To[int64](forwarderUser),
			AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	for _, p := range ports {
		spec.Ports = append(spec.Ports, p.lb)
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: int32(p.lb.Listen), HostPort: p.svc.Port, Protocol: p.svc.Protocol})
	}
	for _, r := range svc.Spec.LoadBalancerSourceRanges {
		if p, err := parsePrefix(r); err == nil {
			spec.SourceRanges = append(spec.SourceRanges, p)
		}
	}
	pod := corev1.PodSpec{
		// no API access: a Local forwarder gets its endpoints through the
		// downward API from an annotation the controller keeps
		AutomountServiceAccountToken:  ptr.To(false),
		EnableServiceLinks:            ptr.To(false),
		PriorityClassName:             priorityClass,
		TerminationGracePeriodSeconds: ptr.To[int64](5),
		Tolerations: []corev1.Toleration{
			{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
			{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		},
		Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{nodeRequirement(optIn)}}},
		}}},
	}
	if spec.Local {
		spec.EndpointsFile = endpointsDir + "/" + endpointsFile
		c.VolumeMounts = []corev1.VolumeMount{{Name: endpointsVolume, MountPath: endpointsDir, ReadOnly: true}}
		pod.Volumes = []corev1.Volume{{Name: endpointsVolume, VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{Path: endpointsFile,
				FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + servicelb.EndpointsAnnotation + "']"}}},
		}}}}
	}
	c.Args = spec.Args()
	pod.Containers = []corev1.Container{c}
	labels := ownerLabels(svc.Namespace, svc.Name)
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: daemonSetName(svc.Namespace, svc.Name), Namespace: Namespace, Labels: labels,
			Annotations: map[string]string{hashAnnotation: hashOf(tmpl)}},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: tmpl,
		},
	}
}

// nodeRequirement is the opt-in or opt-out rule as a node affinity.
func nodeRequirement(optIn bool) corev1.NodeSelectorRequirement {
	if optIn {
		return corev1.NodeSelectorRequirement{Key: NodeLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}
	}
	return corev1.NodeSelectorRequirement{Key: NodeLabel, Operator: corev1.NodeSelectorOpNotIn, Values: []string{"false"}}
}

func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("servicelb: hashing a pod template: %v", err)) // (a PodTemplateSpec always marshals)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
