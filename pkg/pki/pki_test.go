package pki

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
)

func TestIssueWriteLoadVerify(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{CommonName: "srv", DNSNames: []string{"a.example"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usage: UsageServer}
	leaf, err := ca.Issue(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "l.crt"), filepath.Join(dir, "l.key")
	if err := leaf.Write(crt, key); err != nil {
		t.Fatal(err)
	}
	got, err := LoadKeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyLeaf(got.Cert, ca.Cert, spec); err != nil {
		t.Fatalf("verify: %v", err)
	}
	other, _ := NewCA("other")
	if err := VerifyLeaf(got.Cert, other.Cert, spec); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("foreign CA: %v", err)
	}
	more := spec
	more.DNSNames = append(more.DNSNames, "b.example")
	if err := VerifyLeaf(got.Cert, ca.Cert, more); !errors.Is(err, ErrMissingName) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("missing SAN: %v, want ErrMissingName alone", err)
	}
	if len(Fingerprint(ca.Cert)) != 64 || Fingerprint(ca.Cert) == Fingerprint(other.Cert) {
		t.Fatal("fingerprints")
	}
}
