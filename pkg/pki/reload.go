package pki

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// FilePair serves a certificate and key from files and picks up a renewed
// pair without a restart: at a TLS handshake it looks at the files again
// when more than a second has passed since it last did, and reloads them
// when their size or modification time changed. A pair that does not load
// (caught between two writes, say) keeps the previous one in use.
//
// Ours rather than k8s.io/apiserver's dynamiccertificates: the gateway and
// the node agent would otherwise link the apiserver library for one file
// watcher.
type FilePair struct {
	CertFile, KeyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

// NewFilePair loads the pair once, so a missing or broken file fails at start.
func NewFilePair(certFile, keyFile string) (*FilePair, error) {
	p := &FilePair{CertFile: certFile, KeyFile: keyFile}
	if _, err := p.current(true); err != nil {
		return nil, err
	}
	return p, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (p *FilePair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.current(false)
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (p *FilePair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.current(false)
}

func (p *FilePair) current(force bool) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !force && p.cert != nil && time.Since(p.checked) < time.Second {
		return p.cert, nil
	}
	p.checked = time.Now()
	stamp, err := p.fileStamp()
	if err == nil && stamp == p.stamp && p.cert != nil {
		return p.cert, nil
	}
	c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		if p.cert != nil {
			return p.cert, nil
		}
		return nil, fmt.Errorf("loading %s: %w", p.CertFile, err)
	}
	p.cert, p.stamp = &c, stamp
	return p.cert, nil
}

func (p *FilePair) fileStamp() (string, error) {
	var s string
	for _, f := range []string{p.CertFile, p.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}
