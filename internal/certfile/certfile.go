// Package certfile serves the hub's TLS certificate from the PEM files of
// tls_cert_file and tls_key_file, and loads them again on request (SIGHUP),
// so a renewed certificate is taken up without dropping a connection.
package certfile

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// Loader holds the certificate in use.
type Loader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// Load reads the pair; an error names the files and the problem.
func Load(certFile, keyFile string) (*Loader, error) {
	l := &Loader{certFile: certFile, keyFile: keyFile}
	if err := l.Reload(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reload reads the pair again. On an error the certificate in use stays.
func (l *Loader) Reload() error {
	c, err := tls.LoadX509KeyPair(l.certFile, l.keyFile)
	if err != nil {
		return fmt.Errorf("tls_cert_file %s / tls_key_file %s: %w", l.certFile, l.keyFile, err)
	}
	l.cert.Store(&c)
	return nil
}

// Config is the listener's TLS configuration: TLS 1.2 at least, the
// certificate in use, and HTTP/1.1 only — a WebSocket upgrade takes over
// its HTTP/1.1 connection, which HTTP/2 has no way to do here.
func (l *Loader) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.cert.Load(), nil
		},
	}
}
