package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

// buildTermhub builds the termhub binary of this package into a temporary
// directory of t: the commands below are tested as an operator runs them.
func buildTermhub(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "termhub")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runTermhub runs bin with args, the hub's address and key pk1 given as the
// environment variables the pos commands read, and returns its stdout,
// stderr and exit status.
func runTermhub(t *testing.T, bin, hubURL string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TERMHUB_URL="+hubURL, "TERMHUB_KEY=pk1", "TERMHUB_SECRET=sk1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("termhub %q: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func TestPOSHTTP(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runTermhub(t, bin, h.url, append([]string{"pos", "http"}, args...)...)
	}

	out, errOut, code := run("GET", "/v1/terminals")
	if code != 0 || !strings.HasPrefix(out, "HTTP 200 OK\n{") || !strings.Contains(out, `"terminalId":"T1"`) {
		t.Fatalf("GET: exit %d\n%s%s", code, out, errOut)
	}

	sale := `{"terminalId":"T1","amount":"12.50","currency":"USD","reference":"http-1"}`
	out, errOut, code = run("post", "/v1/payments", sale, "--idempotency-key", "k-http-1")
	if code != 0 || !strings.HasPrefix(out, "HTTP 201 Created\n") || !strings.Contains(out, `"created":true`) || !strings.Contains(out, `"reference":"http-1"`) {
		t.Fatalf("POST: exit %d\n%s%s", code, out, errOut)
	}

	// A query string is signed as given.
	out, errOut, code = run("GET", "/v1/transactions?reference=http-1&limit=5")
	if code != 0 || !strings.HasPrefix(out, "HTTP 200 OK\n") || !strings.Contains(out, `"reference":"http-1"`) {
		t.Fatalf("GET with a query: exit %d\n%s%s", code, out, errOut)
	}

	// An error answer is printed with its status, and is the exit status.
	out, errOut, code = run("GET", "/v1/transactions/txn_missing")
	if code != 1 || out != "HTTP 404 Not Found\n"+`{"error":{"code":"transaction_not_found","message":"no such transaction","field":"transactionId"}}`+"\n" ||
		!strings.Contains(errOut, "the hub answered HTTP 404") {
		t.Fatalf("404: exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
	out, errOut, code = run("GET", "/v1/terminals", "--secret", "not-the-secret")
	if code != 1 || !strings.HasPrefix(out, "HTTP 401 Unauthorized\n") || !strings.Contains(out, "bad signature") ||
		strings.Contains(out+errOut, "not-the-secret") {
		t.Fatalf("401: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code = run("GET"); code != 1 || !strings.Contains(errOut, "want METHOD PATH [BODY]") {
		t.Fatalf("no PATH: exit %d\n%s", code, errOut)
	}
}

// TestPOSHTTPCurl checks the --curl output: one command with the
// signature and never the secret, whose arguments, as a POSIX shell splits
// them, are the request's exact bytes; and which, run by sh with the real
// curl, the hub accepts.
func TestPOSHTTPCurl(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	_, curlErr := exec.LookPath("curl")
	curlCmd := func(t *testing.T, args ...string) string {
		t.Helper()
		out, errOut, code := runTermhub(t, bin, h.url, append([]string{"pos", "http", "--curl"}, args...)...)
		// One command, on one line unless the body has line feeds.
		if code != 0 || !strings.HasSuffix(out, "\n") || !strings.HasPrefix(out, "curl ") && !strings.HasPrefix(out, "printf ") {
			t.Fatalf("--curl %q: exit %d\n%s%s", args, code, out, errOut)
		}
		if strings.Contains(out+errOut, "sk1") {
			t.Fatalf("--curl printed the secret:\n%s", out)
		}
		return strings.TrimSuffix(out, "\n")
	}

	for _, c := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"get with a query", "GET", "/v1/transactions?status=COMPLETED&limit=5", "", http.StatusOK},
		{"post with quotes", "POST", "/v1/payments", `{"terminalId":"T1","amount":"1.00","currency":"USD","reference":"it's \"quoted\" $HOME ` + "`x`" + `"}`, http.StatusCreated},
		// curl would read "@…" as a file name: the body goes on stdin. Not
		// JSON, so the hub answers 400, after checking its signature.
		{"body starting with @", "POST", "/v1/payments", "@not-a-file\nsecond line", http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{c.method, c.path}
			if c.body != "" {
				args = append(args, c.body)
			}
			cmd := curlCmd(t, args...)
			req := fakeCurl(t, cmd)
			if req.method != c.method || req.url != h.url+c.path || req.body != c.body || req.header.Get(protocol.HeaderAPIKey) != "pk1" {
				t.Fatalf("the shell splits %s\ninto %+v", cmd, req)
			}
			if curlErr != nil {
				// No curl here: send what the shell made of the command.
				if status, body := req.send(t); status != c.status {
					t.Fatalf("sent as parsed: %d %s", status, body)
				}
				return
			}
			out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
			if err != nil {
				t.Fatalf("sh -c %s: %v\n%s", cmd, err, out)
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
			if err != nil {
				t.Fatalf("curl's output %q: %v", out, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("curl: %s\n%s", resp.Status, body)
			}
		})
	}
}

// curlRequest is a request as curl would send it from its arguments.
type curlRequest struct {
	method, url, body string
	header            http.Header
}

// fakeCurl runs cmd with sh, curl being a shell function that prints its
// arguments (and its stdin for "@-"), and reads the request from them.
func fakeCurl(t *testing.T, cmd string) curlRequest {
	t.Helper()
	const fake = `curl() { for a in "$@"; do printf '%s\0' "$a"; done; for a in "$@"; do if [ "$a" = @- ]; then cat; fi; done; }; `
	out, err := exec.Command("sh", "-c", fake+cmd).Output()
	if err != nil {
		t.Fatalf("sh -c %s: %v", cmd, err)
	}
	args := strings.Split(string(out), "\x00")
	stdin := args[len(args)-1] // after the last NUL: what cat printed
	args = args[:len(args)-1]
	r := curlRequest{method: "GET", header: http.Header{}}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "-sS", "-i", "--globoff", "--path-as-is":
		case "-X", "-H", "--data-binary":
			if i+1 == len(args) {
				t.Fatalf("%s without a value: %q", a, args)
			}
			i++
			switch v := args[i]; a {
			case "-X":
				r.method = v
			case "-H":
				k, hv, _ := strings.Cut(v, ": ")
				r.header.Add(k, hv)
			case "--data-binary":
				r.body = v
				if v == "@-" {
					r.body = stdin
				}
			}
		default:
			if i != len(args)-1 {
				t.Fatalf("unexpected curl argument %q in %q", a, args)
			}
			r.url = a
		}
	}
	return r
}

// send sends r as curl would and returns the answer.
func (r curlRequest) send(t *testing.T) (int, string) {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, r.url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = r.header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestParsePOSHTTPArgs(t *testing.T) {
	a, err := parsePOSArgs([]string{"http", "post", "/v1/payments", `{"a":1}`, "--curl", "--idempotency-key", "k1"}, noEnv, io.Discard)
	if err != nil || a.Method != "POST" || a.Path != "/v1/payments" || a.Body != `{"a":1}` || !a.HasBody || !a.Curl || a.IdempotencyKey != "k1" {
		t.Fatalf("http = %+v, %v", a, err)
	}
	// An empty BODY is a body of zero bytes, not none.
	if a, err := parsePOSArgs([]string{"http", "POST", "/x", ""}, noEnv, io.Discard); err != nil || !a.HasBody {
		t.Fatalf("empty body: %+v, %v", a, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"http", "GET"}, "want METHOD PATH [BODY]"},
		{[]string{"http", "GET", "/a", "b", "c"}, "want METHOD PATH [BODY]"},
		{[]string{"http", "GET", "v1/terminals"}, "must start with /"},
		{[]string{"http", "G T", "/a"}, "bad method"},
	} {
		if _, err := parsePOSArgs(tc.args, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestCurlCommandVector prints the POST of docs/protocol.md's signing test
// vectors: the signature is the document's.
func TestCurlCommandVector(t *testing.T) {
	body := `{"terminalId":"TERM-001","amount":"12.50","currency":"USD","reference":"order-1"}`
	got, err := curlCommand("http://127.0.0.1:8080/", "pk_demo", "sk_demo", "POST", "/v1/payments", []byte(body), nil, time.Unix(1795341600, 0))
	want := `curl -sS -i --globoff --path-as-is -X 'POST' -H 'Content-Type: application/json' -H 'X-Api-Key: pk_demo' ` +
		`-H 'X-Timestamp: 1795341600' -H 'X-Signature: 647970f74cd51d114a5b6091dca040beec0698560b3feb55c5d5110ec7178eca' ` +
		`--data-binary '` + body + `' 'http://127.0.0.1:8080/v1/payments'`
	if err != nil || got != want {
		t.Fatalf("got  %s (%v)\nwant %s", got, err, want)
	}
}
