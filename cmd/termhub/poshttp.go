package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// `termhub pos http METHOD PATH [BODY]`: a signed request by hand, for
// trying an endpoint or checking a client's signing against a known-good one
// (docs/protocol.md, "Signing test vectors").

// httpArgs takes the positional arguments of `pos http`.
func (a *posArgs) httpArgs(pos []string) error {
	if len(pos) < 2 || len(pos) > 3 {
		return fmt.Errorf("pos http: want METHOD PATH [BODY], got %d arguments", len(pos))
	}
	// Methods are case-sensitive on the wire and signed as sent; the hub's
	// are all upper case, so lower case is taken as a slip of the keyboard.
	a.Method, a.Path = strings.ToUpper(pos[0]), pos[1]
	if a.Method == "" || strings.ContainsAny(a.Method, " \t\r\n") {
		return fmt.Errorf("pos http: bad method %q", pos[0])
	}
	if !strings.HasPrefix(a.Path, "/") {
		return fmt.Errorf("pos http: PATH must start with /, got %q", a.Path)
	}
	if len(pos) == 3 {
		a.Body, a.HasBody = pos[2], true
	}
	return nil
}

// httpCall sends the request (or prints it as curl) and prints the answer:
// the status line, then the body. A 4xx or 5xx answer is printed the same
// way and is also the command's error, so that scripts see it in the exit
// status.
func (p *posCLI) httpCall(ctx context.Context) error {
	a := p.args
	var body []byte
	if a.HasBody {
		body = []byte(a.Body)
	}
	var h http.Header
	if a.IdempotencyKey != "" {
		h = http.Header{protocol.HeaderIdemKey: {a.IdempotencyKey}}
	}
	if a.Curl {
		now := time.Now
		if p.opts.Now != nil {
			now = p.opts.Now
		}
		cmd, err := curlCommand(a.URL, a.Key, a.Secret, a.Method, a.Path, body, h, now())
		if err != nil {
			return err
		}
		fmt.Fprintln(p.out, cmd)
		return nil
	}
	var payload any // nil: no body at all
	if body != nil {
		payload = body // sent unchanged
	}
	resp, err := p.http.Do(ctx, a.Method, a.Path, payload, h)
	if err != nil {
		return fmt.Errorf("pos http: %s %s: %w", a.Method, safe(a.Path), err)
	}
	fmt.Fprintf(p.out, "HTTP %d %s\n", resp.Status, http.StatusText(resp.Status))
	switch {
	case len(resp.Body) == 0:
	case json.Valid(resp.Body):
		fmt.Fprintf(p.out, "%s\n", safeJSON(resp.Body))
	default:
		// A plain-text answer (Go's 404 page, a proxy's page): shown, but
		// never acted on by the terminal.
		fmt.Fprintln(p.out, safeLines(strings.TrimRight(string(resp.Body), "\n")))
	}
	if resp.Status >= 400 {
		return fmt.Errorf("pos http: the hub answered HTTP %d", resp.Status)
	}
	return nil
}

// curlCommand is the curl command that sends the request signed for now,
// as one line for a POSIX shell: every argument single-quoted, the body
// passed as its exact bytes. It carries the signature, never the secret.
// --globoff and --path-as-is stop curl from expanding [] and {} or
// resolving dot segments, either of which would change what was signed.
func curlCommand(base, key, secret, method, pathWithQuery string, body []byte, extra http.Header, now time.Time) (string, error) {
	u, err := client.Options{BaseURL: base}.HTTPURL(pathWithQuery)
	if err != nil {
		return "", fmt.Errorf("pos http: %w", err)
	}
	ts := protocol.Timestamp(now)
	sig := protocol.Sign(secret, method, protocol.SignedPath(u, false), ts, body)

	args := []string{"curl", "-sS", "-i", "--globoff", "--path-as-is", "-X", shQuote(method)}
	header := func(k, v string) { args = append(args, "-H", shQuote(k+": "+v)) }
	if len(body) > 0 {
		header("Content-Type", "application/json")
	}
	header(protocol.HeaderAPIKey, key)
	header(protocol.HeaderTimestamp, ts)
	header(protocol.HeaderSignature, sig)
	for k, vs := range extra {
		for _, v := range vs {
			header(k, v)
		}
	}
	prefix := ""
	switch {
	case len(body) == 0:
	case body[0] == '@':
		// curl reads "@name" as a file name: pass such a body on stdin.
		prefix = "printf '%s' " + shQuote(string(body)) + " | "
		args = append(args, "--data-binary", "@-")
	default:
		args = append(args, "--data-binary", shQuote(string(body)))
	}
	args = append(args, shQuote(u.String()))
	return prefix + strings.Join(args, " "), nil
}

// shQuote quotes s for a POSIX shell: inside single quotes every byte is
// literal, so a single quote itself ends the quoting, is written escaped
// with a backslash, and the quoting starts again.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
