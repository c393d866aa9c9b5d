package protocol_test

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// The signing test vectors of docs/protocol.md are read from the document
// itself, so that what integrators copy is what this test checks: every
// intermediate value against the code, and each request, sent byte for byte
// as printed, against a hub whose clock reads the vector's second.

const (
	protocolDoc = "../docs/protocol.md"
	demoConfig  = "../testdata/demo.yaml"
	vectorMark  = "<!-- signing-vector: "
)

// vectorNames are the vectors the document must have.
var vectorNames = []string{"post", "get", "ws-query"}

// docBlocks returns the fenced blocks of md that follow a signing-vector
// comment, by the comment's name ("post", "post string-to-sign", …), each
// as its lines between the fences joined by "\n".
func docBlocks(t *testing.T, md string) map[string]string {
	t.Helper()
	blocks := map[string]string{}
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		name, ok := strings.CutPrefix(lines[i], vectorMark)
		if !ok {
			continue
		}
		name = strings.TrimSpace(strings.TrimSuffix(name, "-->"))
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("%s: %q is not followed by a fenced block", protocolDoc, lines[i])
		}
		var body []string
		j := i + 2
		for ; j < len(lines) && lines[j] != "```"; j++ {
			body = append(body, lines[j])
		}
		if j == len(lines) {
			t.Fatalf("%s: the block of %q is not closed", protocolDoc, name)
		}
		if _, dup := blocks[name]; dup {
			t.Fatalf("%s: two blocks named %q", protocolDoc, name)
		}
		blocks[name] = strings.Join(body, "\n")
		i = j
	}
	return blocks
}

// vectorFields parses a vector's "name: value" lines.
func vectorFields(t *testing.T, name, block string) map[string]string {
	t.Helper()
	f := map[string]string{}
	for _, line := range strings.Split(block, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("vector %s: line %q has no name", name, line)
		}
		f[k] = strings.TrimSpace(v)
	}
	for _, k := range []string{"method", "path with query", "timestamp", "body", "body SHA-256", "string to sign", "secret", "signature"} {
		if _, ok := f[k]; !ok {
			t.Fatalf("vector %s: no %q line", name, k)
		}
	}
	return f
}

// rawRequest turns a request block (LF line ends, as printed) into the
// bytes on the wire: CRLF after the request line and each header, the
// body as it is.
func rawRequest(block string) string {
	head, body, _ := strings.Cut(block, "\n\n")
	return strings.ReplaceAll(head, "\n", "\r\n") + "\r\n\r\n" + body
}

func TestSigningVectorsInProtocolDoc(t *testing.T) {
	md, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlocks(t, string(md))
	for _, name := range vectorNames {
		t.Run(name, func(t *testing.T) {
			checkVector(t, name, blocks)
		})
	}
}

// checkVector checks every value of vector name against the code and the
// printed request against the values.
func checkVector(t *testing.T, name string, blocks map[string]string) {
	for _, b := range []string{name, name + " string-to-sign", name + " request"} {
		if _, ok := blocks[b]; !ok {
			t.Fatalf("%s has no block %q", protocolDoc, b)
		}
	}
	f := vectorFields(t, name, blocks[name])
	method, path, ts, secret, sig := f["method"], f["path with query"], f["timestamp"], f["secret"], f["signature"]
	body := []byte(f["body"])

	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != f["body SHA-256"] {
		t.Errorf("body SHA-256: document %s, computed %s", f["body SHA-256"], got)
	}
	sts, err := strconv.Unquote(f["string to sign"])
	if err != nil {
		t.Fatalf("string to sign %s: %v", f["string to sign"], err)
	}
	if got := protocol.StringToSign(method, path, ts, body); got != sts {
		t.Errorf("string to sign: document %q, protocol.StringToSign %q", sts, got)
	}
	if want := method + "\n" + path + "\n" + ts + "\n" + f["body SHA-256"]; sts != want {
		t.Errorf("string to sign %q is not its parts joined by LF: %q", sts, want)
	}
	if lines := blocks[name+" string-to-sign"]; lines != sts {
		t.Errorf("the line-by-line string to sign %q differs from %q", lines, sts)
	}
	if got := protocol.Sign(secret, method, path, ts, body); got != sig {
		t.Errorf("signature: document %s, protocol.Sign %s", sig, got)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(sts))
	if got := hex.EncodeToString(m.Sum(nil)); got != sig {
		t.Errorf("signature: document %s, HMAC-SHA256 of the string to sign %s", sig, got)
	}

	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(rawRequest(blocks[name+" request"]))))
	if err != nil {
		t.Fatalf("request block: %v", err)
	}
	sent, err := io.ReadAll(req.Body)
	if err != nil || string(sent) != string(body) {
		t.Errorf("request body %q (%v), vector body %q", sent, err, body)
	}
	queryForm := req.Header.Get(protocol.HeaderAPIKey) == ""
	creds := func(h, q string) string {
		if queryForm {
			return req.URL.Query().Get(q)
		}
		return req.Header.Get(h)
	}
	if req.Method != method || protocol.SignedPath(req.URL, queryForm) != path ||
		creds(protocol.HeaderAPIKey, protocol.QueryAPIKey) != "pk_demo" ||
		creds(protocol.HeaderTimestamp, protocol.QueryTimestamp) != ts || creds(protocol.HeaderSignature, protocol.QuerySignature) != sig {
		t.Errorf("request %s %s (query form %v) does not carry the vector's method, signed path %s, key pk_demo, timestamp %s and signature %s",
			req.Method, req.RequestURI, queryForm, path, ts, sig)
	}
}

// TestHubAcceptsSigningVectors sends each request of docs/protocol.md, as
// printed (but for Host), to a hub of the demo configuration whose clock
// reads the vectors' second, with TERM-001 online so that the payment is
// made: the POST creates it, the GET lists, the upgrade switches protocols.
// A request changed by one byte is refused, so the acceptance means the
// signature was checked.
func TestHubAcceptsSigningVectors(t *testing.T) {
	md, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	yaml, err := os.ReadFile(demoConfig)
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlocks(t, string(md))
	e := apptest.Start(t, string(yaml))
	ts, err := strconv.ParseInt(vectorFields(t, "post", blocks["post"])["timestamp"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Unix(ts, 0).Sub(e.Clock.Now())
	if d < 0 {
		t.Fatalf("the vectors' second %d is before the test clock's start %s", ts, e.Clock.Now())
	}
	e.Clock.Advance(d)
	term := apptest.DialTerminal(t, e.ClientOptions(), "TERM-001", "dk_term001")
	apptest.WaitOnline(t, e.App, "TERM-001", term)

	host := strings.TrimPrefix(e.Srv.URL, "http://")
	send := func(block string) (int, string) {
		t.Helper()
		raw := strings.Replace(rawRequest(block), "Host: 127.0.0.1:8080\r\n", "Host: "+host+"\r\n", 1)
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(kit.Wait))
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b []byte
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ = io.ReadAll(resp.Body)
		}
		return resp.StatusCode, string(b)
	}

	// Changed by one byte (limit=10 → limit=11), the GET is refused.
	tampered := strings.Replace(blocks["get request"], "limit=10", "limit=11", 1)
	if code, body := send(tampered); code != http.StatusUnauthorized || !strings.Contains(body, "bad signature") {
		t.Fatalf("tampered GET: %d %s", code, body)
	}
	for _, c := range []struct {
		name, want string
		code       int
	}{
		{"post", `"created":true`, http.StatusCreated},
		{"get", `"data":`, http.StatusOK},
		{"ws-query", "", http.StatusSwitchingProtocols},
	} {
		code, body := send(blocks[c.name+" request"])
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s; want %d with %s", c.name, code, body, c.code, c.want)
		}
	}
}
