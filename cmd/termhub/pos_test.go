package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/sim"
)

func noEnv(string) string { return "" }

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParsePOSArgs(t *testing.T) {
	pay, err := parsePOSArgs([]string{"pay", "--terminal", "TERM-001", "--amount", "12.50", "--currency", "eur", "--reference", "R1", "--wait", "--signature", "accept", "--json"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if pay.Cmd != "pay" || pay.Terminal != "TERM-001" || pay.Amount != "12.50" || pay.Currency != "EUR" || pay.Reference != "R1" ||
		!pay.Wait || pay.Signature != "accept" || !pay.JSON || pay.URL != defaultURL || pay.Key != "pk_demo" || pay.Secret != "sk_demo" {
		t.Fatalf("pay = %+v", pay)
	}

	// The environment supplies the defaults; flags still win.
	env := envOf("TERMHUB_URL", "http://hub:9", "TERMHUB_KEY", "pk_env", "TERMHUB_SECRET", "sk_env")
	st, err := parsePOSArgs([]string{"status", "txn_1", "--key", "pk_flag"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if st.TxnID != "txn_1" || st.URL != "http://hub:9" || st.Key != "pk_flag" || st.Secret != "sk_env" {
		t.Fatalf("status = %+v", st)
	}

	// Flags may come before or after the id; "--" ends the flags.
	for _, args := range [][]string{
		{"refund", "txn_2", "--amount", "5.00", "--wait"},
		{"refund", "--amount", "5.00", "txn_2", "--wait"},
		{"refund", "--amount", "5.00", "--wait", "--", "txn_2"},
	} {
		r, err := parsePOSArgs(args, noEnv, io.Discard)
		if err != nil || r.TxnID != "txn_2" || r.Amount != "5.00" || !r.Wait {
			t.Errorf("%q → %+v, %v", args, r, err)
		}
	}

	gen, err := parsePOSArgs([]string{"pay", "--terminal", "T", "--amount-minor", "1250"}, noEnv, io.Discard)
	if err != nil || gen.AmountMinor != 1250 || !strings.HasPrefix(gen.Reference, "cli-") || gen.Currency != "USD" {
		t.Fatalf("generated reference: %+v, %v", gen, err)
	}
	sig, err := parsePOSArgs([]string{"signature", "txn_3", "--decline"}, noEnv, io.Discard)
	if err != nil || sig.Accept == nil || *sig.Accept {
		t.Fatalf("signature = %+v, %v", sig, err)
	}
	list, err := parsePOSArgs([]string{"list", "--status", "COMPLETED", "--limit", "5"}, noEnv, io.Discard)
	if err != nil || list.Status != "COMPLETED" || list.Limit != 5 {
		t.Fatalf("list = %+v, %v", list, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"charge"}, "unknown command"},
		{[]string{"pay", "--amount", "1"}, "--terminal is required"},
		{[]string{"pay", "--terminal", "T"}, "--amount or --amount-minor is required"},
		{[]string{"pay", "--terminal", "T", "--amount", "1", "--amount-minor", "100"}, "not both"},
		{[]string{"pay", "--terminal", "T", "--amount", "1", "--signature", "accept"}, "only makes sense with --wait"},
		{[]string{"pay", "--terminal", "T", "--amount", "1", "--wait", "--signature", "maybe"}, "accept or decline"},
		{[]string{"pay", "--terminal", "T", "--amount", "1", "txn_1"}, "unexpected argument"},
		{[]string{"status"}, "want one TXN_ID"},
		{[]string{"status", "a", "b"}, "want one TXN_ID"},
		{[]string{"signature", "txn_1"}, "--accept or --decline"},
		{[]string{"cancel", "txn_1", "--amount", "1"}, "flag provided but not defined"},
		{[]string{"status", "txn_1", "--url", ""}, "must not be empty"},
	} {
		_, err := parsePOSArgs(tc.args, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := parsePOSArgs([]string{"help"}, noEnv, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("help: %v", err)
	}
}

func TestParseSimArgs(t *testing.T) {
	a, err := parseSimArgs([]string{"--terminal", "TERM-001:dk:with:colons", "--terminal", "T2:s2", "--card-delay", "50ms", "--slow-card"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Terminals) != 2 || a.Terminals[0] != (simTerminal{"TERM-001", "dk:with:colons"}) || a.URL != defaultURL ||
		a.CardDelay != 50*time.Millisecond || !a.SlowCard || a.ReturnDelay != sim.DefaultReturnDelay {
		t.Fatalf("sim = %+v", a)
	}

	// Every terminal of the file, and the file's listen address as the URL.
	c, err := parseSimArgs([]string{"--config", "../../testdata/demo.yaml"}, envOf("TERMHUB_LISTEN", "0.0.0.0:9090"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, t := range c.Terminals {
		ids = append(ids, t.ID)
	}
	if strings.Join(ids, ",") != "TERM-001,TERM-002,TERM-003,OTHER-001" || c.URL != "http://127.0.0.1:9090" {
		t.Fatalf("from config: %v %s", ids, c.URL)
	}
	if c, _ := parseSimArgs([]string{"--config", "../../testdata/demo.yaml"}, envOf("TERMHUB_URL", "http://elsewhere:1"), io.Discard); c.URL != "http://elsewhere:1" {
		t.Fatalf("TERMHUB_URL ignored: %s", c.URL)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no terminals"},
		{[]string{"--terminal", "TERM-001"}, "DEVICE_ID:SECRET"},
		{[]string{"--terminal", "A:1", "--terminal", "A:2"}, "given twice"},
		{[]string{"--terminal", "A:1", "extra"}, "unexpected argument"},
		{[]string{"--terminal", "A:1", "--behavior", "explode"}, "unknown behaviour"},
		{[]string{"--config", "does-not-exist.yaml"}, "no such file"},
	} {
		_, err := parseSimArgs(tc.args, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}

	for listen, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080", ":8080": "http://127.0.0.1:8080",
		"0.0.0.0:80": "http://127.0.0.1:80", "[::]:8080": "http://127.0.0.1:8080", "hub.local:8080": "http://hub.local:8080",
	} {
		if got := urlForListen(listen); got != want {
			t.Errorf("urlForListen(%q) = %q, want %q", listen, got, want)
		}
	}
}

// ---- against an in-process hub ----

const cliHubConfig = `
merchants:
  - id: m1
    name: Shop
    api_keys:
      - {id: pk1, secret: sk1}
      - {id: pk2, secret: sk2}
    terminals:
      - {device_id: T1, secret: dt1, label: Front}
`

// cliHub is a real hub (wall clock, miniredis) with T1 simulated by
// `termhub sim` itself, run in-process.
type cliHub struct {
	app    *app.App
	url    string
	simOut *kit.LogBuffer
}

func newCLIHub(t *testing.T) *cliHub {
	t.Helper()
	e := apptest.Start(t, cliHubConfig, apptest.WallClock())
	a, srv := e.App, e.Srv
	h := &cliHub{app: a, url: srv.URL, simOut: &kit.LogBuffer{}}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- simMain(ctx, []string{"--url", srv.URL, "--terminal", "T1:dt1", "--card-delay", "0"}, noEnv, h.simOut, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("termhub sim: %v", err)
		}
		if t.Failed() {
			t.Logf("termhub sim output:\n%s", h.simOut)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, _, _ := a.Hub.TerminalLive("T1"); s == protocol.TerminalOnline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the simulated terminal did not come online:\n%s", h.simOut)
		}
		time.Sleep(time.Millisecond)
	}
	return h
}

// pos runs `termhub pos args...` as key pk1 and returns its output.
func (h *cliHub) pos(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	args = append(args, "--url", h.url, "--key", "pk1", "--secret", "sk1")
	err := posMain(ctx, args, noEnv, &out, io.Discard)
	return out.String(), err
}

func TestPOSPayWait(t *testing.T) {
	h := newCLIHub(t)

	out, err := h.pos(t, "pay", "--terminal", "T1", "--amount", "12.50", "--reference", "order-1", "--wait")
	if err != nil {
		t.Fatalf("pay --wait: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "PENDING  txn_") || !strings.Contains(out, "\nCOMPLETED  txn_") ||
		!strings.Contains(out, "12.50 USD  sale on T1  ref order-1") || !strings.Contains(out, "visa 424242******4242 contactless  auth ") {
		t.Fatalf("output:\n%s", out)
	}
	id := strings.Fields(lines[0])[1]

	// The wait read the transaction over REST: it acked nothing, so the
	// key's messages are all still there for its POS app (or watch).
	if cursor, err := h.app.Outbox.Cursor(context.Background(), "m1", "pk1"); err != nil || cursor != "0-0" {
		t.Fatalf("cursor %q, %v: pay --wait acked the POS's messages", cursor, err)
	}

	// --json prints the REST answer, then every new version of it as GET
	// /v1/transactions/{id} answers it.
	out, err = h.pos(t, "pay", "--terminal", "T1", "--amount-minor", "1205", "--reference", "order-2", "--wait", "--json")
	if err != nil {
		t.Fatalf("pay --json: %v\n%s", err, out)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	var created struct {
		Transaction protocol.Transaction `json:"transaction"`
		Created     bool                 `json:"created"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &created); err != nil || !created.Created {
		t.Fatalf("first line %s: %v", lines[0], err)
	}
	var last txnReply
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Transaction == nil {
		t.Fatalf("last line %s: %v", lines[len(lines)-1], err)
	}
	if last.Transaction.Status != protocol.StatusDeclined || last.Transaction.ResponseCode != "05" {
		t.Fatalf("last line = %s", lines[len(lines)-1])
	}

	// A signature prompt answered from the command line.
	out, err = h.pos(t, "pay", "--terminal", "T1", "--amount", "1.55", "--reference", "order-3", "--wait", "--signature", "accept")
	if err != nil || !strings.Contains(out, "\nAWAITING_SIGNATURE  txn_") || !strings.Contains(out, "signature accepted") || !strings.Contains(out, "\nCOMPLETED  txn_") {
		t.Fatalf("signature: %v\n%s", err, out)
	}

	// The same reference again is the existing, final transaction: no wait.
	out, err = h.pos(t, "pay", "--terminal", "T1", "--amount", "12.50", "--reference", "order-1", "--wait")
	if err != nil || !strings.Contains(out, "reference already used") || !strings.Contains(out, "COMPLETED  "+id) {
		t.Fatalf("repeat: %v\n%s", err, out)
	}

	// Refund half and follow it; then the sale shows what was refunded.
	out, err = h.pos(t, "refund", id, "--amount", "6.25", "--wait")
	if err != nil || !strings.Contains(out, "\nCOMPLETED  txn_") || !strings.Contains(out, "refund on T1  refund of "+id) {
		t.Fatalf("refund: %v\n%s", err, out)
	}
	out, err = h.pos(t, "status", id)
	if err != nil || !strings.Contains(out, "refunded: 6.25 USD") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = h.pos(t, "list", "--type", "refund")
	if err != nil || !strings.Contains(out, "6.25 USD  refund") || strings.Contains(out, "order-2") {
		t.Fatalf("list: %v\n%s", err, out)
	}
}

func TestPOSErrors(t *testing.T) {
	h := newCLIHub(t)
	var he *hubError

	_, err := h.pos(t, "status", "txn_missing")
	if !errors.As(err, &he) || he.Status != 404 || he.Err.Code != protocol.CodeTransactionNotFound || he.Err.Field != "transactionId" {
		t.Fatalf("status: %v", err)
	}
	if got := err.Error(); got != "HTTP 404 transaction_not_found: no such transaction (field transactionId)" {
		t.Errorf("message = %q", got)
	}

	out, err := h.pos(t, "pay", "--terminal", "T1", "--amount", "1.234", "--json")
	if !errors.As(err, &he) || he.Err.Code != protocol.CodeInvalidRequest || he.Err.Field != "amount" || !strings.Contains(out, `"code":"invalid_request"`) {
		t.Fatalf("bad amount: %v\n%s", err, out)
	}

	err = posMain(context.Background(), []string{"pay", "--terminal", "T1", "--amount", "1", "--wait", "--url", h.url, "--key", "pk1", "--secret", "wrong"}, noEnv, io.Discard, io.Discard)
	if !errors.As(err, &he) || he.Status != 401 || he.Err.Code != protocol.CodeUnauthorized {
		t.Fatalf("bad secret on the WebSocket: %v", err)
	}
}

// ---- what the hub sends is escaped before it is printed ----

// evilTxn is a transaction as a hub that stored unchecked text would send
// it: JSON escapes for C0 (as encoding/json writes them), raw bytes for
// C1 and a bidi override (which encoding/json leaves as they are).
const evilTxn = `{"id":"txn_evil","merchantId":"m1","terminalId":"T1","connectionId":"","type":"sale","parentId":"","status":"COMPLETED",` +
	`"amountMinor":1250,"amount":"12.50","currency":"USD","reference":"order-` + "\u202e" + `1","captureMode":"auto","description":"",` +
	`"printReceipt":true,"timeoutSeconds":180,"authorizedAmountMinor":1250,"refundedAmountMinor":0,` +
	`"authCode":"\u001b[2J\u001b[31mPWNED","responseCode":"00","rrn":"1234` + "\u009b" + `2J","cardScheme":"visa","maskedPan":"424242******4242",` +
	`"entryMode":"emv_chip","receipts":null,"errorCode":"","errorMessage":"line\nFAKE LINE\r","createdAt":"2026-01-02T03:04:05Z",` +
	`"updatedAt":"2026-01-02T03:04:05Z","completedAt":"2026-01-02T03:04:05Z","version":3,"history":[]}`

// evilHub answers like a hub, with evilTxn everywhere.
func evilHub(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/transactions/txn_evil":
			fmt.Fprintf(w, `{"transaction":%s}`+"\n", evilTxn)
		case "/v1/transactions":
			fmt.Fprintf(w, `{"data":[%s],"hasMore":true,"nextCursor":"txn_`+"\u0085"+`x"}`+"\n", evilTxn)
		case "/v1/terminals":
			fmt.Fprint(w, `{"data":[{"terminalId":"T1","merchantId":"m1","label":"Front\u001b]0;owned\u0007","status":"online","connectionId":"c1","lastHeartbeat":null,"currentTransactionId":""}]}`+"\n")
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"invalid_request","message":"bad \u001b[2J`+"\xff"+`","field":"reference"}}`+"\n")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// assertInert fails if out has anything a terminal would act on: C0
// controls other than line ends, DEL, C1, bidi controls, invalid UTF-8.
func assertInert(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not valid UTF-8: %q", what, out)
	}
	for _, r := range out {
		if (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f) || unicode.Is(unicode.Cf, r) {
			t.Errorf("%s: output has %U:\n%q", what, r, out)
			return
		}
	}
}

func TestPOSOutputEscapesHubText(t *testing.T) {
	url := evilHub(t)
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := posMain(context.Background(), append(args, "--url", url, "--key", "pk1", "--secret", "sk1"), noEnv, &out, io.Discard)
		return out.String(), err
	}

	out, err := run("status", "txn_evil")
	if err != nil {
		t.Fatal(err)
	}
	assertInert(t, "status", out)
	for _, want := range []string{`auth "\x1b[2J\x1b[31mPWNED"`, `rrn "1234\u009b2J"`, `ref "order-\u202e1"`, `error: - ("line\nFAKE LINE\r")`} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %s:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("status output has %d lines, want 3 (a newline in errorMessage must not start a line):\n%s", n, out)
	}

	// --json prints the same JSON value, every non-graphic character escaped.
	out, err = run("status", "txn_evil", "--json")
	if err != nil {
		t.Fatal(err)
	}
	assertInert(t, "status --json", out)
	var r struct{ Transaction protocol.Transaction }
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if r.Transaction.AuthCode != "\x1b[2J\x1b[31mPWNED" || r.Transaction.RRN != "1234\u009b2J" || r.Transaction.Reference != "order-\u202e1" {
		t.Errorf("status --json changed the value: %+v", r.Transaction)
	}

	for _, args := range [][]string{{"list"}, {"list", "--json"}, {"terminals"}, {"terminals", "--json"}} {
		out, err := run(args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		assertInert(t, strings.Join(args, " "), out)
		if !strings.Contains(out, "T1") {
			t.Errorf("%v printed nothing useful:\n%s", args, out)
		}
	}

	// A refusal: the printed body and the error message are inert too.
	out, err = run("status", "txn_other", "--json")
	var he *hubError
	if !errors.As(err, &he) || he.Err.Field != "reference" {
		t.Fatalf("refusal: %v", err)
	}
	assertInert(t, "refusal body", out)
	assertInert(t, "refusal error", err.Error())
	assertInert(t, "refusal error as main prints it", escapeError(err).Error())
	if !errors.As(escapeError(err), &he) {
		t.Error("escapeError hides the hubError")
	}
}

func TestSimOutputEscapesHubText(t *testing.T) {
	e := sim.Event{Time: time.Now(), DeviceID: "T1", Kind: sim.EventError, Action: "error", TransactionID: "txn_1",
		Detail: "invalid_request: \x1b[2J\x1b[31mPWNED \u009b2J \u202eevil \xff"}
	line := formatEvent(e, false)
	assertInert(t, "sim line", line)
	if !strings.Contains(line, `\x1b[2J\x1b[31mPWNED`) {
		t.Errorf("sim line %q does not show the escape", line)
	}
	js := formatEvent(e, true)
	assertInert(t, "sim --json line", js)
	var back sim.Event
	if err := json.Unmarshal([]byte(js), &back); err != nil || !strings.Contains(back.Detail, "\x1b[2J\x1b[31mPWNED \u009b2J \u202eevil") {
		t.Errorf("sim --json line %s: %v, %+v", js, err, back)
	}
	// Errors of several lines keep their lines, each escaped.
	joined := escapeError(errors.Join(errors.New("a\x1b[2J"), errors.New("b"))).Error()
	if joined != `"a\x1b[2J"`+"\nb" {
		t.Errorf("joined error = %q", joined)
	}
}
