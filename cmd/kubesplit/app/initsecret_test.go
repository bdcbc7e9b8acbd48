package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
)

// TestSyncSecret: init into a Secret creates the PKI once; run again (a
// re-install, an upgrade's hook) it keeps every CA and key and writes
// nothing.
func TestSyncSecret(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	o := bootstrap.Options{Server: "https://203.0.113.7:6443", NodeToken: true}
	rep, changed, err := syncSecret(ctx, cs, "ks", "pki", o, "")
	if err != nil || !changed || len(rep.Created) == 0 {
		t.Fatalf("first run: %+v %v %v", rep, changed, err)
	}
	first, err := cs.CoreV1().Secrets("ks").Get(ctx, "pki", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"pki__ca.crt", "pki__ca.key", "pki__sa.key", "admin.kubeconfig", "config__node-token", "config__encryption-config.yaml"} {
		if len(first.Data[k]) == 0 {
			t.Errorf("Secret has no %s (keys: %d)", k, len(first.Data))
		}
	}
	for k, v := range first.Data {
		// kubeconfigs name their certificate files relative to themselves:
		// nothing points into init's scratch directory
		if bytes.Contains(v, []byte("kubesplit-init-")) {
			t.Errorf("%s refers to init's scratch directory", k)
		}
	}
	if !bytes.Contains(first.Data["admin.kubeconfig"], []byte("https://203.0.113.7:6443")) {
		t.Errorf("admin kubeconfig does not point at --server")
	}
	rep, changed, err = syncSecret(ctx, cs, "ks", "pki", o, "")
	if err != nil || changed || len(rep.Created) != 0 {
		t.Fatalf("second run: created %v, changed %v, %v", rep.Created, changed, err)
	}
	again, _ := cs.CoreV1().Secrets("ks").Get(ctx, "pki", metav1.GetOptions{})
	for k, v := range first.Data {
		if !bytes.Equal(again.Data[k], v) {
			t.Errorf("%s changed on a second run", k)
		}
	}
}

func TestInitSecretFlags(t *testing.T) {
	for args, want := range map[string]string{
		"init --secret pki":                      `want NAMESPACE/NAME`,
		"init --secret ks/pki --data-dir /tmp/x": "--data-dir does not apply",
		"init --secret ks/pki --owner 1:1":       "--owner does not apply",
		"init --public-address 203.0.113.9":      "--public-address is for --secret",
		"init --secret ks/pki --public-address 1.2.3.4 --public-address-from-service gw --kubeconfig /dev/null": "give one",
	} {
		var out, errb bytes.Buffer
		if code := Main(strings.Fields(args), &out, &errb); code == 0 || !strings.Contains(errb.String(), want) {
			t.Errorf("%s: exit %d, %q; want %q", args, code, errb.String(), want)
		}
	}
}

// TestPublicAddress: the gateway Service's LoadBalancer address, once it
// has one, is kept in the Secret (the apiserver advertises it).
func TestPublicAddress(t *testing.T) {
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ks", Name: "gw"}}
	cs := fake.NewClientset(svc)
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if _, err := serviceAddress(short, cs, "ks", "gw", ""); err == nil || !strings.Contains(err.Error(), "no LoadBalancer ingress") {
		t.Fatalf("Service without an address: %v", err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.9"}}
		_, _ = cs.CoreV1().Services("ks").UpdateStatus(ctx, svc, metav1.UpdateOptions{})
	}()
	wait, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	addr, err := serviceAddress(wait, cs, "ks", "gw", "")
	if err != nil || addr != "203.0.113.9" {
		t.Fatalf("address %q, %v", addr, err)
	}
	// ServiceLB lists every node's address, in any order: the address
	// recorded before stays while the Service still has it
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.8"}, {IP: "203.0.113.9"}}
	if _, err := cs.CoreV1().Services("ks").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := serviceAddress(wait, cs, "ks", "gw", "203.0.113.9"); err != nil || got != "203.0.113.9" {
		t.Errorf("with the recorded address listed second: %q, %v", got, err)
	}
	short2, cancel3 := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel3()
	got, err := serviceAddress(short2, cs, "ks", "gw", "203.0.113.7")
	if err != nil || got != "203.0.113.8" {
		t.Errorf("with the recorded address gone: %q, %v, want the first after waiting for the recorded one", got, err)
	}
	if err := addressKept("203.0.113.7", got, "ks/pki"); err == nil {
		t.Error("the changed address was not refused")
	}
	if _, _, err := syncSecret(ctx, cs, "ks", "pki", bootstrap.Options{Server: "https://" + addr + ":6443", APIServerSANs: []string{addr}}, addr); err != nil {
		t.Fatal(err)
	}
	s, _ := cs.CoreV1().Secrets("ks").Get(ctx, "pki", metav1.GetOptions{})
	if got := string(s.Data["config__public-address"]); got != addr {
		t.Fatalf("config__public-address = %q", got)
	}
	if got := recordedAddress(ctx, cs, "ks", "pki"); got != addr {
		t.Fatalf("the next run would prefer %q, want the recorded %s", got, addr)
	}
	// a run that would move the control plane is refused, naming both
	// addresses and the steps of a deliberate move
	if err := addressKept(addr, "203.0.113.7", "ks/pki"); err == nil || !strings.Contains(err.Error(), addr) ||
		!strings.Contains(err.Error(), "203.0.113.7") || !strings.Contains(err.Error(), "gateway.address") {
		t.Errorf("a changed address: %v", err)
	}
	for _, same := range [][2]string{{addr, addr}, {"", "203.0.113.7"}, {addr, ""}} {
		if err := addressKept(same[0], same[1], "ks/pki"); err != nil {
			t.Errorf("addressKept(%q, %q): %v", same[0], same[1], err)
		}
	}
}
