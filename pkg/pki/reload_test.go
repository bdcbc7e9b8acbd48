package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFilePairPicksUpARenewedPairAndKeepsTheLastGoodOne(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "s.crt"), filepath.Join(dir, "s.key")
	issue := func() *KeyPair {
		kp, err := ca.Issue(Spec{CommonName: "s", Usage: UsageServer})
		if err != nil {
			t.Fatal(err)
		}
		if err := kp.Write(crt, key); err != nil {
			t.Fatal(err)
		}
		return kp
	}
	first := issue()
	p, err := NewFilePair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		c, err := p.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c2.SerialNumber.String()
	}
	if serial() != first.Cert.SerialNumber.String() {
		t.Fatal("not the first certificate")
	}
	second := issue()
	time.Sleep(1100 * time.Millisecond) // looked at again after a second
	if got := serial(); got != second.Cert.SerialNumber.String() {
		t.Fatalf("serves %s after renewal, want %s", got, second.Cert.SerialNumber)
	}
	// half a pair (a key of another certificate) keeps the last good one
	other, _ := ca.Issue(Spec{CommonName: "o", Usage: UsageServer})
	otherKey, _ := KeyPEM(other.Key)
	if err := os.WriteFile(key, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if got := serial(); got != second.Cert.SerialNumber.String() {
		t.Fatalf("serves %s from a broken pair", got)
	}
	if _, err := NewFilePair(crt, key); err == nil {
		t.Fatal("a mismatched pair loaded at start")
	}
}
