package certfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate for cn and its key.
func writePair(t *testing.T, dir, cn string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cf, kf
}

func served(t *testing.T, l *Loader) string {
	t.Helper()
	c, err := l.Config().GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestLoadAndReload(t *testing.T) {
	dir := t.TempDir()
	cf, kf := writePair(t, dir, "first.test")
	l, err := Load(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	if cn := served(t, l); cn != "first.test" {
		t.Fatalf("serves %q", cn)
	}
	writePair(t, dir, "second.test")
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn := served(t, l); cn != "second.test" {
		t.Fatalf("after a reload serves %q, want the renewed certificate", cn)
	}
	// A broken file is refused and the certificate in use stays.
	if err := os.WriteFile(kf, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(); err == nil || !strings.Contains(err.Error(), "tls_key_file") {
		t.Fatalf("Reload of a broken key: %v", err)
	}
	if cn := served(t, l); cn != "second.test" {
		t.Fatalf("after a failed reload serves %q", cn)
	}
	if cfg := l.Config(); cfg.MinVersion < 0x0303 || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "http/1.1" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load("/nonexistent/cert.pem", "/nonexistent/key.pem"); err == nil || !strings.Contains(err.Error(), "tls_cert_file") {
		t.Fatalf("Load of missing files: %v", err)
	}
}
