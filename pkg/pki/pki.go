// Package pki creates and checks the certificates and keys of a kubesplit
// cluster. Keys are ECDSA P-256; everything is PEM on disk.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Validity periods. Leaf certificates are renewed before they expire
// (bootstrap.Renew: at init, by the controllers while running, and by
// `kubesplit certs rotate`); CAs stay.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 365 * 24 * time.Hour
)

// Usage says what a leaf certificate is for.
type Usage int

const (
	UsageServer Usage = 1 << iota
	UsageClient
)

// KeyPair is a certificate with its private key.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Spec describes a leaf certificate.
type Spec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usage        Usage
	// Validity is how long the certificate lasts (0: LeafValidity).
	Validity time.Duration
}

// SpecOf describes an existing certificate, so it can be renewed as it is:
// same subject, names and usages.
func SpecOf(c *x509.Certificate) Spec {
	s := Spec{CommonName: c.Subject.CommonName, Organization: c.Subject.Organization,
		DNSNames: c.DNSNames, IPs: c.IPAddresses}
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			s.Usage |= UsageServer
		case x509.ExtKeyUsageClientAuth:
			s.Usage |= UsageClient
		}
	}
	return s
}

// NewKey makes an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA makes a self-signed certificate authority.
func NewCA(commonName string) (*KeyPair, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing CA %s: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// Issue signs a new leaf certificate with the CA.
func (ca *KeyPair) Issue(spec Spec) (*KeyPair, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	return ca.IssueFor(spec, key)
}

// IssueFor signs a new certificate for an existing key. Renewal uses it:
// with the key unchanged, replacing the certificate file alone is atomic for
// every reader, which can never meet a certificate with the other key (the
// upstream components reload a pair on the first file event, and at start
// they refuse a mismatched one).
func (ca *KeyPair) IssueFor(spec Spec, key crypto.Signer) (*KeyPair, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	validity := spec.Validity
	if validity <= 0 {
		validity = LeafValidity
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     spec.DNSNames,
		IPAddresses:  spec.IPs,
	}
	if spec.Usage&UsageServer != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Usage&UsageClient != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate %s: %w", spec.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// CertPEM encodes a certificate.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS#8.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// PublicKeyPEM encodes a public key as PKIX.
func PublicKeyPEM(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// WriteFile writes data atomically and durably (temp file, fsync, rename,
// fsync of the directory) with the given mode, so a crash or power cut
// leaves the old file or the new one, never half a key. The temporary file's
// name starts with a dot (the kubelet skips those in its manifest directory).
// A file that is replaced keeps its owner, so a root operator renewing a
// certificate does not take it away from the role that reads it.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := keepOwner(tmp, path); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Write stores a new pair as cert (0644) and key (0600) files. Renewal keeps
// the key and replaces the certificate alone (see IssueFor), one atomic
// rename for every reader.
func (kp *KeyPair) Write(certPath, keyPath string) error {
	keyPEM, err := KeyPEM(kp.Key)
	if err != nil {
		return err
	}
	if err := WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return WriteFile(certPath, CertPEM(kp.Cert), 0o644)
}

// ErrCorrupt marks a file that exists but cannot be used.
var ErrCorrupt = errors.New("corrupt or mismatched")

// LoadCert reads the first certificate of a PEM file.
func LoadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCert(data, path)
}

// ParseCert decodes the first PEM certificate of data; path names it in errors.
func ParseCert(data []byte, path string) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: %w: no PEM certificate in the file", path, ErrCorrupt)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, err)
	}
	return cert, nil
}

// LoadKey reads a PEM private key (PKCS#8, EC or PKCS#1).
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKey(data, path)
}

// ParseKey decodes a PEM private key; path names it in errors.
func ParseKey(data []byte, path string) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	var err error
	if block == nil {
		return nil, fmt.Errorf("%s: %w: no PEM key in the file", path, ErrCorrupt)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: %w: unexpected PEM block %q", path, ErrCorrupt, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrCorrupt, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %w: key cannot sign", path, ErrCorrupt)
	}
	return signer, nil
}

// LoadKeyPair reads a certificate and its key and checks that they belong together.
func LoadKeyPair(certPath, keyPath string) (*KeyPair, error) {
	cert, err := LoadCert(certPath)
	if err != nil {
		return nil, err
	}
	key, err := LoadKey(keyPath)
	if err != nil {
		return nil, err
	}
	return pairOf(cert, key, certPath, keyPath)
}

// ParseKeyPair decodes PEM certificate and key bytes and checks they belong together.
func ParseKeyPair(certPEM, keyPEM []byte, name string) (*KeyPair, error) {
	cert, err := ParseCert(certPEM, name)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(keyPEM, name)
	if err != nil {
		return nil, err
	}
	return pairOf(cert, key, name+" certificate", name+" key")
}

func pairOf(cert *x509.Certificate, key crypto.Signer, certPath, keyPath string) (*KeyPair, error) {
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not belong to %s: %w", keyPath, certPath, ErrCorrupt)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// ErrMissingName: a certificate that is otherwise sound lacks a name asked
// for now (a SAN added since it was issued); it wants reissuing, not repair.
var ErrMissingName = errors.New("certificate lacks a requested name")

// VerifyLeaf checks that leaf was signed by ca, is valid now and carries the
// wanted usages and names.
func VerifyLeaf(leaf *x509.Certificate, ca *x509.Certificate, spec Spec) error {
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("not signed by %q: %w", ca.Subject.CommonName, ErrCorrupt)
	}
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("expired on %s", leaf.NotAfter.Format(time.RFC3339))
	}
	if leaf.Subject.CommonName != spec.CommonName {
		return fmt.Errorf("common name is %q, want %q: %w", leaf.Subject.CommonName, spec.CommonName, ErrCorrupt)
	}
	for _, d := range spec.DNSNames {
		if !slices.Contains(leaf.DNSNames, d) {
			return fmt.Errorf("lacks DNS name %q: %w", d, ErrMissingName)
		}
	}
	for _, ip := range spec.IPs {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return fmt.Errorf("lacks IP address %s: %w", ip, ErrMissingName)
		}
	}
	return nil
}

// Fingerprint is the SHA-256 of a certificate's DER bytes, hex encoded: the
// value a join token pins.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// SamePublicKey reports whether the PEM public key file holds key's public half.
func SamePublicKey(pubPEM []byte, key crypto.Signer) bool {
	want, err := PublicKeyPEM(key.Public())
	return err == nil && bytes.Equal(bytes.TrimSpace(want), bytes.TrimSpace(pubPEM))
}
