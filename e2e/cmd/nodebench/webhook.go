package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/e2e/gatewayview"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

const (
	hooksNS  = "bench-hooks"         // the webhook pods
	hookedNS = "bench-hooked"        // where the webhooks served by pods act
	besideNS = "bench-hooked-beside" // where the webhook beside the routed apiserver acts
	// the webhook configurations' names: served by the pods, and beside
	inPods, beside = "nodebench", "nodebench-beside"
	besideHost     = "bench-webhook"      // the container's name on the control network
	scopeLabel     = "nodebench-webhooks" // on a hooked namespace: its name
	plainNS        = "bench-plain"        // no webhooks
	hookName       = "hooks"
	warmUp         = 5 // calls per path before timing (connections set up)
	// hookCalls is the webhook calls per hooked create: mutating, then validating.
	hookCalls = 2
)

type latency struct {
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
}

func latencyOf(v []float64) latency { return latency{pct(v, 50), pct(v, 99)} }

// webhookPaths compares calls with and without webhooks through one apiserver.
type webhookPaths struct {
	With     latency `json:"with_webhooks"`
	Without  latency `json:"without_webhooks"`
	AddP50Ms float64 `json:"webhooks_add_p50_ms"`
	AddP99Ms float64 `json:"webhooks_add_p99_ms"`
	// PerCallP50Ms is AddP50Ms shared out over the create's webhook calls.
	PerCallP50Ms float64 `json:"one_webhook_call_adds_p50_ms"`
	// AddPairedMs is the median of each hooked create minus the create
	// without webhooks next to it, for both webhook calls.
	AddPairedMs float64 `json:"webhooks_add_paired_median_ms"`
}

func pathsOf(with, without []float64) *webhookPaths {
	p := &webhookPaths{With: latencyOf(with), Without: latencyOf(without)}
	p.AddP50Ms, p.AddP99Ms = p.With.P50Ms-p.Without.P50Ms, p.With.P99Ms-p.Without.P99Ms
	p.PerCallP50Ms = p.AddP50Ms / hookCalls
	p.AddPairedMs = pairedMedian(with, without)
	return p
}

type webhookResult struct {
	Calls  int           `json:"calls_per_path"`
	What   string        `json:"what"`
	Tunnel *webhookPaths `json:"via_apiserver_and_tunnel"`
	// Direct is the same through the second apiserver, which dials pods
	// itself; DirectRoute says how it reached them, or why it was skipped.
	Direct      *webhookPaths `json:"via_apiserver_with_a_route_to_the_pods,omitempty"`
	DirectRoute string        `json:"direct_route"`
	// Relay and PerDial are the same through two fresh tunneled
	// apiservers (-per-dial): with the egress relay, and with a new mTLS
	// connection to the gateway per dial.
	Relay   *webhookPaths `json:"via_fresh_apiserver_egress_relay,omitempty"`
	PerDial *webhookPaths `json:"via_fresh_apiserver_per_dial_egress,omitempty"`
	// RelayMinusPerDialPairedMs is the paired median of hooked creates
	// through the relay apiserver minus the per-dial one (-per-dial).
	RelayMinusPerDialPairedMs float64 `json:"hooked_create_relay_minus_per_dial_paired_median_ms,omitempty"`
	// Beside is the routed apiserver's calls to the same webhook server run
	// as a container on the control network: no pod, no tunnel.
	Beside *webhookPaths `json:"via_routed_apiserver_to_the_webhook_as_a_container_beside_it"`
	// PodStreamsPerCall is how many streams to pods the gateway opened per
	// hooked create (2 webhook calls) through a tunneled apiserver while the
	// calls were timed: 0 when the apiservers reuse their connections to the
	// webhook, 2 when they dial anew.
	PodStreamsPerCall float64 `json:"gateway_pod_streams_per_hooked_call"`
}

// webhookBeside runs testapp's webhook server as a container on the control
// network (reachable by the routed apiserver, not by the tunneled ones,
// whose egress reaches pods only) and registers it for besideNS.
func (b *bench) webhookBeside(ctx context.Context, caPEM, certPEM, keyPEM []byte) error {
	c := b.c
	dir := b.tb.TempDir()
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil { // (read by the container's user)
			return err
		}
	}
	if _, err := dockercluster.Docker(ctx, "run", "-d", "--name", c.Name(besideHost), "--label", "kubesplit.test="+c.ID,
		"--network", c.Control, "--network-alias", besideHost, "-v", dir+":/tls:ro",
		"kubesplit/testapp:"+dockercluster.DefaultTag(), "webhook", "8443", "/tls"); err != nil {
		return err
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: besideNS,
		Labels: map[string]string{scopeLabel: besideNS}}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	return registerWebhooks(ctx, c.Client, beside, besideNS, func(path string) admissionv1.WebhookClientConfig {
		return admissionv1.WebhookClientConfig{CABundle: caPEM, URL: ptr.To("https://" + besideHost + ":8443" + path)}
	})
}

// webhookPhase deploys testapp's validating and mutating webhooks (one pod
// per node, failurePolicy Fail, scoped to one namespace) and times ConfigMap
// creates in that namespace against creates in a namespace without
// webhooks, interleaved, through the apiserver and its tunnel egress and,
// when it can reach pods, through the directly routed apiserver. perDial
// adds two fresh tunneled apiservers, with the egress relay and with the
// per-dial egress. Last, the same webhook
// server runs as a container beside the routed apiserver (no pod, no
// tunnel), for what a webhook call costs without the tunnel.
func (b *bench) webhookPhase(ctx context.Context, n int, perDial bool) (*webhookResult, error) {
	cs := b.c.Client
	defer func() { // cluster-wide objects before the namespaces
		for _, name := range []string{inPods, beside} {
			_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, name+"-validate", metav1.DeleteOptions{})
			_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, name+"-mutate", metav1.DeleteOptions{})
		}
		for _, ns := range []string{hookedNS, besideNS, plainNS, hooksNS} {
			_ = cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		}
	}()
	caPEM, certPEM, keyPEM, err := servingCert(hookName+"."+hooksNS+".svc", besideHost)
	if err != nil {
		return nil, err
	}
	pods, err := b.deployWebhook(ctx, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if err := registerWebhooks(ctx, cs, inPods, hookedNS, func(path string) admissionv1.WebhookClientConfig {
		return admissionv1.WebhookClientConfig{CABundle: caPEM,
			Service: &admissionv1.ServiceReference{Namespace: hooksNS, Name: hookName, Path: ptr.To(path), Port: ptr.To[int32](443)}}
	}); err != nil {
		return nil, err
	}
	r := &webhookResult{Calls: n, What: fmt.Sprintf("ConfigMap create; a mutating then a validating webhook (failurePolicy Fail) served by %d testapp pods, one per node", len(pods))}
	// the apiservers compared, each with where its numbers go
	type path struct {
		cfg    *rest.Config
		hooked string // namespace
		out    **webhookPaths
	}
	paths := []path{{b.c.Config, hookedNS, &r.Tunnel}}
	members := []string{routedAPI}
	if perDial {
		members = append(members, relayAPI, perDialAPI)
	}
	cfgs, err := b.apiservers(members...)
	if err != nil {
		return nil, err
	}
	routed := cfgs[0]
	var ok bool
	if r.DirectRoute, ok = b.routeToPods(ctx, pods); ok {
		paths = append(paths, path{routed, hookedNS, &r.Direct})
	}
	if perDial {
		paths = append(paths, path{cfgs[1], hookedNS, &r.Relay}, path{cfgs[2], hookedNS, &r.PerDial})
	}
	if err := b.webhookBeside(ctx, caPEM, certPEM, keyPEM); err != nil {
		return nil, err
	}
	paths = append(paths, path{routed, besideNS, &r.Beside})
	var fns []func() (float64, error)
	for _, p := range paths {
		cs, err := fastClient(p.cfg)
		if err != nil {
			return nil, err
		}
		// each apiserver's webhook cache learns of the configurations on its own
		if err := waitMutates(ctx, cs, p.hooked); err != nil {
			return nil, fmt.Errorf("apiserver %s: %w", p.cfg.Host, err)
		}
		fns = append(fns, createIn(ctx, cs, p.hooked, true), createIn(ctx, cs, plainNS, false))
	}
	if _, err := interleave(warmUp, fns...); err != nil {
		return nil, err
	}
	gw, err := gatewayview.New(b.c.Kubeconfig, b.c.IP("tunnel-gateway", b.c.Control)+":8131")
	if err != nil {
		return nil, err
	}
	before, errBefore := podDials(ctx, gw)
	lat, err := interleave(n, fns...)
	if err != nil {
		return nil, err
	}
	if after, err := podDials(ctx, gw); err == nil && errBefore == nil {
		tunneled := 1
		if perDial {
			tunneled += 2
		}
		r.PodStreamsPerCall = float64(after-before) / float64(n*tunneled)
		fmt.Fprintf(os.Stderr, "nodebench: the gateway's streams to pods: %d before the timed webhook calls, %d after\n", before, after)
	}
	hooked := map[**webhookPaths][]float64{}
	for i, p := range paths {
		*p.out = pathsOf(lat[2*i], lat[2*i+1])
		hooked[p.out] = lat[2*i]
	}
	if perDial {
		r.RelayMinusPerDialPairedMs = pairedMedian(hooked[&r.Relay], hooked[&r.PerDial])
	}
	return r, nil
}

// createIn returns a timed ConfigMap create in ns that checks the
// webhooks acted (hooked) or did not on it.
func createIn(ctx context.Context, cs kubernetes.Interface, ns string, hooked bool) func() (float64, error) {
	return func() (float64, error) {
		start := time.Now()
		cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}, metav1.CreateOptions{})
		ms := msSince(start)
		if err != nil {
			return 0, fmt.Errorf("ConfigMap create in %s: %w", ns, err)
		}
		if mutated := cm.Labels["e2e-mutated"] == "true"; mutated != hooked {
			return 0, fmt.Errorf("ConfigMap %s/%s: mutated=%v: the webhooks' namespace scope does not hold", ns, cm.Name, mutated)
		}
		return ms, nil
	}
}

// fastClient is a clientset without client-side rate limiting (it would
// add its own waits to the timings) and with a per-request timeout.
func fastClient(cfg *rest.Config) (kubernetes.Interface, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst, cfg.Timeout = -1, 0, 10*time.Second
	return kubernetes.NewForConfig(cfg)
}

// servingCert makes a throwaway CA and a serving certificate for dnsNames,
// as cert-manager would for an operator's webhook.
func servingCert(dnsNames ...string) (caPEM, certPEM, keyPEM []byte, err error) {
	ca, err := pki.NewCA("nodebench-webhook-ca")
	if err != nil {
		return nil, nil, nil, err
	}
	leaf, err := ca.Issue(pki.Spec{CommonName: dnsNames[0], DNSNames: dnsNames, Usage: pki.UsageServer})
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err = pki.KeyPEM(leaf.Key)
	return pki.CertPEM(ca.Cert), pki.CertPEM(leaf.Cert), keyPEM, err
}

// deployWebhook runs testapp's webhook server with the given serving
// certificate, one pod per node, behind the Service hooks.bench-hooks:443,
// and returns its ready pods.
func (b *bench) deployWebhook(ctx context.Context, certPEM, keyPEM []byte) ([]corev1.Pod, error) {
	cs := b.c.Client
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: hooksNS}},
		{ObjectMeta: metav1.ObjectMeta{Name: hookedNS, Labels: map[string]string{scopeLabel: hookedNS}}},
		{ObjectMeta: metav1.ObjectMeta{Name: plainNS}},
	} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	if _, err := cs.CoreV1().Secrets(hooksNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	nodes := len(b.c.Nodes())
	labels := map[string]string{"app": hookName}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}}}},
		Volumes: []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hooks-tls"}}}},
		Containers: []corev1.Container{{Name: hookName, Image: b.image, ImagePullPolicy: corev1.PullNever,
			Command:      []string{"/testapp", "webhook", "8443", "/tls"},
			Ports:        []corev1.ContainerPort{{ContainerPort: 8443}},
			VolumeMounts: []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}},
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8443), Scheme: corev1.URISchemeHTTPS}}}}},
	}
	if _, err := cs.AppsV1().Deployments(hooksNS).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: hookName},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(nodes)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Services(hooksNS).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: hookName},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(8443)}}}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	var ready []corev1.Pod
	for deadline := time.Now().Add(2 * time.Minute); len(ready) < nodes; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d webhook pods ready after 2 minutes", len(ready), nodes)
		}
		list, err := cs.CoreV1().Pods(hooksNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + hookName})
		if err != nil {
			continue
		}
		ready = ready[:0]
		for _, p := range list.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
					ready = append(ready, p)
				}
			}
		}
	}
	return ready, nil
}

// registerWebhooks registers a validating and a mutating webhook (NAME-validate,
// NAME-mutate) for ConfigMap creates in namespace ns, at client(path).
func registerWebhooks(ctx context.Context, cs kubernetes.Interface, name, ns string, client func(path string) admissionv1.WebhookClientConfig) error {
	rules := []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
		Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}}
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{scopeLabel: ns}}
	fail, none := admissionv1.Fail, admissionv1.SideEffectClassNone
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-validate"},
		Webhooks: []admissionv1.ValidatingWebhook{{Name: "validate." + name + ".kubesplit.io", ClientConfig: client("/validate"), Rules: rules,
			NamespaceSelector: scope, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5)}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-mutate"},
		Webhooks: []admissionv1.MutatingWebhook{{Name: "mutate." + name + ".kubesplit.io", ClientConfig: client("/mutate"), Rules: rules,
			NamespaceSelector: scope, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5)}},
	}, metav1.CreateOptions{})
	return err
}

// waitMutates waits until a create in the hooked namespace ns comes back
// mutated: the apiserver has loaded the configurations and reaches the webhook.
func waitMutates(ctx context.Context, cs kubernetes.Interface, ns string) error {
	var last error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		cm, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"}}, metav1.CreateOptions{})
		if err == nil && cm.Labels["e2e-mutated"] == "true" {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("labels %v", cm.Labels)
		}
	}
	return fmt.Errorf("the mutating webhook did not act within a minute: %v", last)
}

// routeToPods gives the second apiserver a route to each node's pod range
// via that node's edge address (what a flat, host-gw style network would
// give it; pod ranges are otherwise routed only inside the node
// containers) and checks it can open a TCP connection to each webhook pod.
// It says how the pods were reached, or why not.
func (b *bench) routeToPods(ctx context.Context, pods []corev1.Pod) (string, bool) {
	c := b.c
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "skipped: listing nodes: " + err.Error(), false
	}
	var routes []string
	for _, n := range nodes.Items {
		if n.Spec.PodCIDR == "" {
			continue
		}
		via := c.IP(n.Name, c.Edge)
		if out, err := c.InNetns(ctx, routedAPI, "ip", "route", "replace", n.Spec.PodCIDR, "via", via); err != nil {
			return fmt.Sprintf("skipped: a route to %s's pods: %v %s", n.Name, err, out), false
		}
		routes = append(routes, n.Spec.PodCIDR+" via "+n.Name)
	}
	var probe []string
	for _, p := range pods {
		probe = append(probe, fmt.Sprintf("timeout 2 bash -c '</dev/tcp/%s/8443' || { echo %s on %s; exit 1; }", p.Status.PodIP, p.Status.PodIP, p.Spec.NodeName))
	}
	if out, err := c.InNetns(ctx, routedAPI, "bash", "-c", strings.Join(probe, "; ")); err != nil {
		return fmt.Sprintf("skipped: the second apiserver, with routes %s, cannot connect to the webhook pod at %s "+
			"(Docker drops packets on an --internal network whose source or destination is outside its subnet, "+
			"when the host bridges through iptables: net.bridge.bridge-nf-call-iptables=1)", strings.Join(routes, ", "), out), false
	}
	return "the second apiserver reaches the pods through routes to each node's pod range via its edge address (" + strings.Join(routes, ", ") + ")", true
}

// podDials is the number of streams the gateway has opened to pods, over all nodes.
func podDials(ctx context.Context, gw *gatewayview.Client) (int64, error) {
	stats, err := gw.Tunnels(ctx)
	var n int64
	for _, s := range stats {
		n += s.PodDials
	}
	return n, err
}
