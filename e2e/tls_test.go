package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// testCA is a certificate authority made for one test, and the leaf
// certificates it signs for 127.0.0.1.
type testCA struct {
	t    *testing.T
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "termhub test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{t: t, key: key, cert: cert, pool: pool}
}

// issue writes a certificate for 127.0.0.1 named cn, and its key, to
// cert.pem and key.pem in dir.
func (ca *testCA) issue(dir, cn string) (certFile, keyFile string) {
	t := ca.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Written beside and renamed, as a certificate renewal does, so a
	// reload never reads half a file.
	for _, f := range []struct {
		path string
		data []byte
	}{
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})},
	} {
		if err := os.WriteFile(f.path+".new", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".new", f.path); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// client trusts only this CA, and opens a new TLS connection per request
// (so a test sees the certificate in use now).
func (ca *testCA) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.pool},
		DisableKeepAlives: true,
	}}
}

// servedName is the common name of the certificate the hub at addr serves.
func servedName(t *testing.T, ca *testCA, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestTLSServesHTTPSAndWSS: with tls_cert_file and tls_key_file the real
// binary's one listener serves the REST API, both WebSockets and the ops
// login over TLS, refuses plain HTTP, sets the ops cookie Secure, and takes
// up a renewed certificate on SIGHUP.
func TestTLSServesHTTPSAndWSS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.issue(dir, "first.termhub.test")
	p := newProcessHub(t, "", kit.Config, "TERMHUB_TLS_CERT_FILE="+certFile, "TERMHUB_TLS_KEY_FILE="+keyFile, "TERMHUB_OPS_TOKEN=test-ops-token")
	p.tls = ca.client()
	p.start() // waits for /readyz over HTTPS

	// Plain HTTP on the same port gets no answer of the API.
	if resp, err := http.Get("http://" + p.addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP was served on the TLS listener")
		}
	}
	// A client that does not trust the certificate cannot connect.
	if _, err := http.Get("https://" + p.addr + "/healthz"); err == nil {
		t.Fatal("a client without the CA accepted the hub's certificate")
	}

	// Signed REST over HTTPS.
	resp, err := client.NewHTTP(p.opts(), "pk1", kit.Secrets["pk1"]).Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, nil)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("GET /v1/terminals over HTTPS: %v %+v", err, resp)
	}
	// A whole payment over WSS, POS and terminal.
	term := dialTerminal(t, p, "T1")
	pos := dialPOS(t, p, "pk1")
	id := pay(t, pos, "T1", 1234, "tls-1").Transaction.ID
	startCard(t, term, pos, id)
	approveWith(t, term, id, "T1S")
	read(t, term, "resultAck")
	if done := statusOf(t, pos, id, protocol.StatusCompleted); done.Transaction.AuthCode != "T1S" {
		t.Fatalf("payment over WSS: %+v", done)
	}

	// The ops session cookie is Secure when the hub serves TLS itself.
	lresp, err := p.tls.Post(p.baseURL()+"/ops/login", "application/json", bytes.NewReader([]byte(`{"token":"test-ops-token"}`)))
	if err != nil {
		t.Fatal(err)
	}
	lresp.Body.Close()
	var cookie *http.Cookie
	for _, c := range lresp.Cookies() {
		if c.Name == "termhub_ops" {
			cookie = c
		}
	}
	if lresp.StatusCode != http.StatusNoContent || cookie == nil || !cookie.Secure || !cookie.HttpOnly {
		t.Fatalf("ops login over TLS: HTTP %d, cookie %+v; want 204 and a Secure HttpOnly cookie", lresp.StatusCode, cookie)
	}

	// A renewed certificate is served after SIGHUP, without a restart: the
	// open connections stay.
	if cn := servedName(t, ca, p.addr); cn != "first.termhub.test" {
		t.Fatalf("serves %q", cn)
	}
	ca.issue(dir, "renewed.termhub.test")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for servedName(t, ca, p.addr) != "renewed.termhub.test" {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not served within 10 s of SIGHUP")
		}
		time.Sleep(20 * time.Millisecond) // waiting on another process's signal handling
	}
	send(t, pos, "listTerminals", map[string]any{"requestId": "after-renewal"})
	if m := read(t, pos, "terminals"); !strings.Contains(string(m.Raw), `"T1"`) {
		t.Fatalf("the POS connection after the renewal: %s", m.Raw)
	}

	// A broken edit of the configuration file refuses that reload but
	// does not keep the old certificate: the renewal still takes.
	if err := os.WriteFile(p.config, []byte("merchants: [this is not a configuration\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca.issue(dir, "third.termhub.test")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for servedName(t, ca, p.addr) != "third.termhub.test" {
		if time.Now().After(deadline) {
			t.Fatal("a renewed certificate was not served after SIGHUP with a broken configuration file")
		}
		time.Sleep(20 * time.Millisecond) // waiting on another process's signal handling
	}
}
