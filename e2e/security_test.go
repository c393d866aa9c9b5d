package e2e

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// Security rules of docs/protocol.md#credentials over real sockets: replayed requests, key
// scopes, rate limits. Each runs on miniredis, and on the real Redis of
// REDIS_URL when it is set (CI).

// signedOnce signs method path body once, for sending the same bytes again.
func signedOnce(e *env, key, method, path, body string) http.Header {
	ts := protocol.Timestamp(e.Clock.Now())
	return http.Header{
		protocol.HeaderTimestamp: {ts},
		protocol.HeaderSignature: {protocol.Sign(kit.Secrets[key], method, path, ts, []byte(body))},
	}
}

// refunds lists the refunds of sale.
func refunds(t *testing.T, e *env, saleID string) []protocol.Transaction {
	t.Helper()
	resp, err := e.http("pk1").Do(kit.Ctx(t), http.MethodGet, "/v1/transactions?type=refund&limit=100", nil, nil)
	var page struct{ Data []protocol.Transaction }
	if err != nil || resp.Status != http.StatusOK || resp.Decode(&page) != nil {
		t.Fatalf("list refunds: %v %+v", err, resp)
	}
	var out []protocol.Transaction
	for _, r := range page.Data {
		if r.ParentID == saleID {
			out = append(out, r)
		}
	}
	return out
}

// TestReplayedSignedRequestMovesNoMoney is the finding of the attack run:
// the identical signed refund sent three times inside the ±300 s window
// made three refunds. Now the first is served and the repeats are 409
// duplicate_request; with an Idempotency-Key every repeat gets the stored
// answer; a request signed afresh is a new request.
func TestReplayedSignedRequestMovesNoMoney(t *testing.T) {
	e := newEnv(t)
	term, pos := e.terminal("T1"), e.pos("pk1")
	saleID := completedSale(t, pos, term, "T1", 1000, "replay-sale")

	path := "/v1/transactions/" + saleID + "/refund"
	body := `{"amountMinor":100}`
	captured := signedOnce(e, "pk1", http.MethodPost, path, body)
	h := e.http("pk1")
	for i := 0; i < 3; i++ {
		resp, err := h.Do(kit.Ctx(t), http.MethodPost, path, []byte(body), captured)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if resp.Status != http.StatusCreated {
				t.Fatalf("the first refund: HTTP %d %s", resp.Status, resp.Body)
			}
			continue
		}
		if e := resp.Err(); resp.Status != http.StatusConflict || e == nil || e.Code != protocol.CodeDuplicateRequest || e.Field != protocol.HeaderSignature {
			t.Fatalf("replay %d: HTTP %d %s, want 409 duplicate_request naming X-Signature", i, resp.Status, resp.Body)
		}
	}
	// The Idempotency-Key header is not signed: a captured request sent
	// again with a key of the attacker's choosing is refused all the same.
	for _, k := range []string{"attacker-1", "attacker-2"} {
		withKey := captured.Clone()
		withKey.Set(protocol.HeaderIdemKey, k)
		resp, err := h.Do(kit.Ctx(t), http.MethodPost, path, []byte(body), withKey)
		if err != nil {
			t.Fatal(err)
		}
		if e := resp.Err(); resp.Status != http.StatusConflict || e == nil || e.Code != protocol.CodeDuplicateRequest {
			t.Fatalf("replay with Idempotency-Key %s: HTTP %d %s, want 409 duplicate_request", k, resp.Status, resp.Body)
		}
	}
	if rs := refunds(t, e, saleID); len(rs) != 1 || rs[0].AmountMinor != 100 {
		t.Fatalf("after one refund and four replays: %+v, want one refund of 100", rs)
	}

	// The replay guard lives in Redis for the timestamp's window (and a
	// little more), not forever.
	sig := strings.ToLower(captured.Get(protocol.HeaderSignature))
	ttl, err := e.App.Redis.PTTL(kit.Ctx(t), e.Redis.Prefix+"replay:{m1}:pk1:"+sig).Result()
	if err != nil || ttl <= 4*time.Minute || ttl > protocol.MaxClockSkew+time.Minute {
		t.Fatalf("replay record TTL %v (%v), want about the 300 s window", ttl, err)
	}

	// A payment replayed is refused too, not answered created:false.
	e.terminal("T2")
	pbody := `{"terminalId":"T2","amountMinor":250,"currency":"USD","reference":"replay-pay"}`
	pcap := signedOnce(e, "pk1", http.MethodPost, "/v1/payments", pbody)
	for i, want := range []int{http.StatusCreated, http.StatusConflict} {
		resp, err := h.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", []byte(pbody), pcap)
		if err != nil || resp.Status != want {
			t.Fatalf("payment attempt %d: %v HTTP %d %s, want %d", i, err, resp.Status, resp.Body, want)
		}
	}

	// With an Idempotency-Key the same signed bytes get the stored answer.
	ibody := `{"amountMinor":50}`
	icap := signedOnce(e, "pk1", http.MethodPost, path, ibody)
	icap.Set(protocol.HeaderIdemKey, "refund-50")
	var first string
	for i := 0; i < 3; i++ {
		resp, err := h.Do(kit.Ctx(t), http.MethodPost, path, []byte(ibody), icap)
		var out struct{ Transaction protocol.Transaction }
		if err != nil || resp.Status != http.StatusCreated || resp.Decode(&out) != nil {
			t.Fatalf("idempotent attempt %d: %v %+v, want the stored 201", i, err, resp)
		}
		if i == 0 {
			first = out.Transaction.ID
		} else if out.Transaction.ID != first {
			t.Fatalf("idempotent attempt %d answered %s, want the stored %s", i, out.Transaction.ID, first)
		}
	}

	// The same signed bytes with another key, or none, are refused.
	for _, k := range []string{"refund-50-other", ""} {
		other := icap.Clone()
		other.Set(protocol.HeaderIdemKey, k)
		if k == "" {
			other.Del(protocol.HeaderIdemKey)
		}
		if resp, err := h.Do(kit.Ctx(t), http.MethodPost, path, []byte(ibody), other); err != nil || resp.Status != http.StatusConflict {
			t.Fatalf("idempotent request replayed with key %q: %v %+v, want 409", k, err, resp)
		}
	}
	if rs := refunds(t, e, saleID); len(rs) != 2 {
		t.Fatalf("after the idempotent refund and its replays: %d refunds, want 2", len(rs))
	}

	// A route that does not honour Idempotency-Key (opening an event
	// session) refuses a repeat even with the key it first carried.
	sbody := `{}`
	scap := signedOnce(e, "pk1", http.MethodPost, "/v1/sessions", sbody)
	scap.Set(protocol.HeaderIdemKey, "session-1")
	for i, want := range []int{http.StatusCreated, http.StatusConflict} {
		resp, err := h.Do(kit.Ctx(t), http.MethodPost, "/v1/sessions", []byte(sbody), scap)
		if err != nil || resp.Status != want {
			t.Fatalf("session attempt %d: %v %+v, want %d", i, err, resp, want)
		}
	}

	// GETs may repeat: reading moves nothing.
	gcap := signedOnce(e, "pk1", http.MethodGet, "/v1/transactions/"+saleID, "")
	for i := 0; i < 2; i++ {
		if resp, err := h.Do(kit.Ctx(t), http.MethodGet, "/v1/transactions/"+saleID, nil, gcap); err != nil || resp.Status != http.StatusOK {
			t.Fatalf("repeated GET %d: %v %+v", i, err, resp)
		}
	}
}

// TestClientSignsEveryAttemptAfresh: the repository's client sends an
// identical request twice in the same second (the fake clock never moves)
// and both are served: it signs the repeat for the next second.
func TestClientSignsEveryAttemptAfresh(t *testing.T) {
	e := newEnv(t)
	e.terminal("T1")
	h := e.http("pk1")
	for i, want := range []int{http.StatusCreated, http.StatusOK} {
		resp, err := h.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", sale("T1", 700, "fresh-1"), nil)
		if err != nil || resp.Status != want {
			t.Fatalf("attempt %d: %v %+v, want %d", i, err, resp, want)
		}
	}
	// Another process of the same key (another client) sending the same
	// bytes in the same second is told duplicate_request, and signs again.
	other := client.NewHTTP(e.opts, "pk1", kit.Secrets["pk1"])
	if resp, err := other.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", sale("T1", 700, "fresh-1"), nil); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("a second client's identical request: %v %+v", err, resp)
	}
}

// scopedConfig adds to merchant m1 a read-only and a write-only key.
var scopedConfig = strings.Replace(kit.Config, "      - {id: pk1b, secret: sk1b}\n",
	"      - {id: pk1b, secret: sk1b}\n      - {id: pk_ro, secret: sk_ro, scopes: [terminal:read]}\n      - {id: pk_wo, secret: sk_wo, scopes: [terminal:write]}\n", 1)

// TestKeyScopes: a read-only key reads but cannot create or change
// anything (403 insufficient_scopes, nothing stored), over REST and its
// WebSocket, which stays open; a write-only key cannot read.
func TestKeyScopes(t *testing.T) {
	e := envFrom(t, apptest.Start(t, scopedConfig))
	term, pos := e.terminal("T1"), e.pos("pk1")
	saleID := completedSale(t, pos, term, "T1", 900, "scoped-sale")
	ro := client.NewHTTP(e.opts, "pk_ro", "sk_ro")
	wo := client.NewHTTP(e.opts, "pk_wo", "sk_wo")
	insufficient := func(what string, resp *client.Response, err error) {
		t.Helper()
		if err != nil || resp.Status != http.StatusForbidden || resp.Err() == nil || resp.Err().Code != protocol.CodeInsufficientScopes {
			t.Fatalf("%s: %v %+v, want 403 insufficient_scopes", what, err, resp)
		}
	}
	for _, path := range []string{"/v1/transactions", "/v1/transactions/" + saleID, "/v1/terminals", "/v1/terminals/T1"} {
		if resp, err := ro.Do(kit.Ctx(t), http.MethodGet, path, nil, nil); err != nil || resp.Status != http.StatusOK {
			t.Fatalf("read-only GET %s: %v %+v", path, err, resp)
		}
		resp, err := wo.Do(kit.Ctx(t), http.MethodGet, path, nil, nil)
		insufficient("write-only GET "+path, resp, err)
	}
	resp, err := ro.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", sale("T1", 100, "ro-pay"), nil)
	insufficient("read-only payment", resp, err)
	for _, action := range []string{"refund", "void", "cancel", "capture", "signature"} {
		resp, err := ro.Do(kit.Ctx(t), http.MethodPost, "/v1/transactions/"+saleID+"/"+action, map[string]any{}, nil)
		insufficient("read-only "+action, resp, err)
	}
	if rs := refunds(t, e, saleID); len(rs) != 0 {
		t.Fatalf("a read-only key's refund was stored: %+v", rs)
	}
	if resp, err := e.http("pk1").Do(kit.Ctx(t), http.MethodGet, "/v1/transactions?reference=ro-pay", nil, nil); err != nil || strings.Contains(string(resp.Body), "ro-pay") {
		t.Fatalf("a read-only key's payment was stored: %v %s", err, resp.Body)
	}

	// Its WebSocket: writes refused, reads served, the connection open.
	c, err := client.DialPOS(kit.Ctx(t), e.opts, "pk_ro", "sk_ro")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	send(t, c, "payment", map[string]any{"requestId": "w1", "terminalId": "T1", "amountMinor": 100, "currency": "USD", "reference": "ro-ws"})
	if m := read(t, c, "error"); m.Err().Code != protocol.CodeInsufficientScopes || !strings.Contains(string(m.Raw), `"requestId":"w1"`) {
		t.Fatalf("read-only WebSocket payment: %s", m.Raw)
	}
	send(t, c, "getTransactionStatus", map[string]any{"requestId": "r1", "transactionId": saleID})
	if m := read(t, c, "transactionStatus"); !strings.Contains(string(m.Raw), saleID) {
		t.Fatalf("read-only getTransactionStatus: %s", m.Raw)
	}
	// The write-only key may pay.
	e.terminal("T2")
	if resp, err := wo.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", sale("T2", 100, "wo-pay"), nil); err != nil || resp.Status != http.StatusCreated {
		t.Fatalf("write-only payment: %v %+v", err, resp)
	}
}

// metricValue reads one sample of the hub's /metrics (0 when absent).
func metricValue(t *testing.T, e *env, sample string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+e.App.Config.OpsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// limitedConfig has small limits, and trusts the test's own address as a
// proxy so that X-Forwarded-For can play many client addresses.
var limitedConfig = "rate_limit: {key_rate: 1, key_burst: 3, terminal_rate: 1, terminal_burst: 3, auth_failure_rate: 1, auth_failure_burst: 3, trusted_proxies: [127.0.0.1, \"::1\"]}\n" + kit.Config

// from makes a request come from addr (through the trusted proxy).
func from(addr string, h http.Header) http.Header {
	if h == nil {
		h = http.Header{}
	}
	h.Set("X-Forwarded-For", addr)
	return h
}

func wantLimited(t *testing.T, what string, resp *client.Response, err error, retryAfter string) {
	t.Helper()
	if err != nil || resp.Status != http.StatusTooManyRequests || resp.Err() == nil || resp.Err().Code != protocol.CodeRateLimited ||
		resp.Header.Get("Retry-After") != retryAfter {
		t.Fatalf("%s: %v %+v (Retry-After %q), want 429 rate_limited with Retry-After %s", what, err, resp, resp.Header.Get("Retry-After"), retryAfter)
	}
}

// TestRequestsPerKeyAreLimited: past its burst a key gets 429 with
// Retry-After, other keys do not; time refills it.
func TestRequestsPerKeyAreLimited(t *testing.T) {
	e := envFrom(t, apptest.Start(t, limitedConfig))
	h := e.http("pk1")
	for i := 0; i < 3; i++ {
		if resp, err := h.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, nil); err != nil || resp.Status != http.StatusOK {
			t.Fatalf("request %d within the burst: %v %+v", i, err, resp)
		}
	}
	resp, err := h.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, nil)
	wantLimited(t, "past the burst", resp, err, "1")
	if resp, err := e.http("pk1b").Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, nil); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("another key: %v %+v", err, resp)
	}
	// The WebSocket upgrade counts against the same budget.
	if _, err := client.DialPOS(kit.Ctx(t), e.opts, "pk1", "sk1"); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("upgrade past the burst: %v", err)
	}
	e.Clock.Advance(time.Second)
	if resp, err := h.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, nil); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("a second later: %v %+v", err, resp)
	}
	if n := metricValue(t, e, `termhub_rate_limited_total{limit="api_key"}`); n < 2 {
		t.Fatalf("termhub_rate_limited_total{limit=\"api_key\"} = %v, want ≥ 2", n)
	}
}

// TestFailedAuthenticationsAreLimited: a guesser's address is refused once
// its failures are used up, even with good credentials, until time refills
// it; failures for one key id from many addresses turn into 429 too, but
// the key's owner, signing correctly, is never locked out.
func TestFailedAuthenticationsAreLimited(t *testing.T) {
	e := envFrom(t, apptest.Start(t, limitedConfig))
	h := e.http("pk1")
	bad := client.NewHTTP(e.opts, "pk1", "not-the-secret")
	for i := 0; i < 3; i++ {
		resp, err := bad.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("198.51.100.1", nil))
		if err != nil || resp.Status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %v %+v, want 401", i, err, resp)
		}
	}
	resp, err := bad.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("198.51.100.1", nil))
	wantLimited(t, "the 4th failure", resp, err, "1")
	// Now even good credentials from that address wait...
	resp, err = h.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("198.51.100.1", nil))
	wantLimited(t, "good credentials from the guesser's address", resp, err, "1")
	// ...and so does its WebSocket upgrade, unsigned or not.
	hdr := from("198.51.100.1", nil)
	if r, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/v1/terminal/ws", nil); r != nil {
		r.Header = hdr
		if resp, err := http.DefaultClient.Do(r); err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("upgrade from the blocked address: %v %+v", err, resp)
		} else {
			resp.Body.Close()
		}
	}
	// ...while other addresses are served.
	if resp, err := e.http("pk1b").Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("198.51.100.2", nil)); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("another address: %v %+v", err, resp)
	}
	e.Clock.Advance(time.Second)
	if resp, err := e.http("pk1b").Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("198.51.100.1", nil)); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("the address a second later: %v %+v", err, resp)
	}

	// Failures for pk1b from many addresses: from the 4th on, 429.
	badB := client.NewHTTP(e.opts, "pk1b", "wrong")
	for i := 0; i < 4; i++ {
		resp, err := badB.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("203.0.113."+strconv.Itoa(10+i), nil))
		if i < 3 && (err != nil || resp.Status != http.StatusUnauthorized) {
			t.Fatalf("pk1b failure %d: %v %+v", i, err, resp)
		}
		if i == 3 {
			wantLimited(t, "the 4th failure for pk1b", resp, err, "1")
		}
	}
	// The owner of pk1b, signing correctly, is served.
	if resp, err := e.http("pk1b").Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("203.0.113.99", nil)); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("pk1b's owner during the attack: %v %+v", err, resp)
	}
	for _, m := range []string{`termhub_auth_failures_total{kind="pos"}`, `termhub_rate_limited_total{limit="auth_address"}`, `termhub_rate_limited_total{limit="auth_id"}`} {
		if n := metricValue(t, e, m); n < 1 {
			t.Errorf("%s = %v, want ≥ 1", m, n)
		}
	}
}

// TestFailedAuthenticationLogIsLimited: 200 failures from 200 addresses
// log at most the log's burst, and the next line, a second later, says how
// many were left out; each names the client's address, never a signature.
func TestFailedAuthenticationLogIsLimited(t *testing.T) {
	var logs kit.LogBuffer
	e := envFrom(t, apptest.Start(t, limitedConfig, apptest.Logger(zerolog.New(&logs))))
	bad := client.NewHTTP(e.opts, "pk-nobody", "x")
	for i := 0; i < 200; i++ {
		addr := "192.0.2." + strconv.Itoa(i)
		if resp, err := bad.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from(addr, nil)); err != nil || resp.Status/100 != 4 {
			t.Fatalf("failure %d: %v %+v", i, err, resp)
		}
	}
	lines := strings.Count(logs.String(), "authentication failed")
	if lines == 0 || lines > 20 {
		t.Fatalf("%d log lines for 200 failures, want 1..20", lines)
	}
	if !strings.Contains(logs.String(), `"remote":"192.0.2.0"`) {
		t.Fatalf("the log does not name the client's address:\n%s", logs.String())
	}
	e.Clock.Advance(time.Second)
	if resp, err := bad.Do(kit.Ctx(t), http.MethodGet, "/v1/terminals", nil, from("192.0.2.250", nil)); err != nil || resp.Status != http.StatusUnauthorized {
		t.Fatalf("a failure a second later: %v %+v", err, resp)
	}
	if !strings.Contains(logs.String(), `"unlogged":`+strconv.Itoa(200-lines)) {
		t.Fatalf("no line says %d failures were left out:\n%s", 200-lines, logs.String())
	}
}

// TestWebSocketFramesAreLimited: a POS past its budget gets an error frame
// with rate_limited and retryAfter and stays open; acks are never refused;
// one that keeps going is closed with 1008. A terminal past its budget is
// refused its chatter but never its result.
func TestWebSocketFramesAreLimited(t *testing.T) {
	e := envFrom(t, apptest.Start(t, limitedConfig))
	pos := e.pos("pk1b")     // 1 of 3
	for i := 0; i < 2; i++ { // 2 and 3 of 3
		send(t, pos, "listTerminals", map[string]any{"requestId": "ok" + strconv.Itoa(i)})
		read(t, pos, "terminals")
	}
	send(t, pos, "listTerminals", map[string]any{"requestId": "over"})
	m := read(t, pos, "error")
	if m.Err().Code != protocol.CodeRateLimited || !strings.Contains(string(m.Raw), `"retryAfter":1`) || !strings.Contains(string(m.Raw), `"requestId":"over"`) {
		t.Fatalf("past the budget: %s", m.Raw)
	}
	// An ack is not refused: it is answered as an ack (unknown messageId).
	send(t, pos, "ack", map[string]any{"requestId": "ack", "messageId": "1-0"})
	if m := read(t, pos, "error"); m.Err().Code == protocol.CodeRateLimited {
		t.Fatalf("an ack was rate limited: %s", m.Raw)
	}
	// Still open: a second later it is served again.
	e.Clock.Advance(time.Second)
	send(t, pos, "listTerminals", map[string]any{"requestId": "later"})
	read(t, pos, "terminals")
	// Keeping going: as many refusals in a row as the burst close it.
	for i := 0; i < 3; i++ {
		send(t, pos, "listTerminals", map[string]any{"requestId": "flood" + strconv.Itoa(i)})
	}
	var fd protocol.ForceDisconnect
	if err := read(t, pos, "forceDisconnect").Decode(&fd); err != nil || !fd.ReconnectAllowed {
		t.Fatalf("forceDisconnect: %+v %v", fd, err)
	}
	for {
		if _, err := pos.Read(kit.Ctx(t)); err != nil {
			if client.CloseCode(err) != int(protocol.ClosePolicy) {
				t.Fatalf("closed with %v, want 1008", err)
			}
			break
		}
	}

	// A terminal: its connect and two messages use its budget; the next
	// message is refused; its result is still taken and acknowledged.
	e.Clock.Advance(10 * time.Second)
	term := e.terminal("T1") // 1 of 3
	buyer := e.pos("pk1")
	id := pay(t, buyer, "T1", 4400, "limited-result").Transaction.ID
	read(t, term, "startPayment")
	send(t, term, "commandReceived", map[string]any{"transactionId": id})                            // 2
	send(t, term, "paymentProgress", map[string]any{"transactionId": id, "stage": "card_presented"}) // 3
	send(t, term, "paymentProgress", map[string]any{"requestId": "p2", "transactionId": id, "stage": "pin_entry"})
	if m := read(t, term, "error"); m.Err().Code != protocol.CodeRateLimited {
		t.Fatalf("terminal past its budget: %s", m.Raw)
	}
	approveWith(t, term, id, "LIM")
	read(t, term, "resultAck")
	if done := statusOf(t, buyer, id, protocol.StatusCompleted); done.Transaction.AuthCode != "LIM" {
		t.Fatalf("the result past the limit: %+v", done)
	}
}

// TestOpsTokenGuessesAreLimited: wrong ops tokens, at the dashboard's login
// and as a bearer token on /metrics, use up the address's budget like any
// failed authentication.
func TestOpsTokenGuessesAreLimited(t *testing.T) {
	e := envFrom(t, apptest.Start(t, limitedConfig))
	login := func(addr, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.Srv.URL+"/ops/login", strings.NewReader(`{"token":"`+token+`"}`))
		req.Header = from(addr, req.Header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := 0; i < 3; i++ {
		if resp := login("198.51.100.7", "guess"+strconv.Itoa(i)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: HTTP %d, want 401", i, resp.StatusCode)
		}
	}
	if resp := login("198.51.100.7", "guess3"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("the 4th wrong token: HTTP %d Retry-After %q, want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// The right token from that address waits too; from another it works.
	if resp := login("198.51.100.7", e.App.Config.OpsToken); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the right token from the guesser's address: HTTP %d, want 429", resp.StatusCode)
	}
	if resp := login("198.51.100.8", e.App.Config.OpsToken); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the right token from another address: HTTP %d, want 204", resp.StatusCode)
	}
	// Bearer guesses on /metrics count too.
	for i := 0; i < 4; i++ {
		req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/metrics", nil)
		req.Header = from("198.51.100.9", http.Header{"Authorization": {"Bearer guess"}})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: http.StatusUnauthorized, false: http.StatusTooManyRequests}[i < 3]; resp.StatusCode != want {
			t.Fatalf("bearer guess %d on /metrics: HTTP %d, want %d", i, resp.StatusCode, want)
		}
	}
	// And on /v1/ops/webhooks, served outside the hub's own routes.
	for i := 0; i < 4; i++ {
		req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/v1/ops/webhooks", nil)
		req.Header = from("198.51.100.10", http.Header{"Authorization": {"Bearer guess"}})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: http.StatusUnauthorized, false: http.StatusTooManyRequests}[i < 3]; resp.StatusCode != want {
			t.Fatalf("bearer guess %d on /v1/ops/webhooks: HTTP %d, want %d", i, resp.StatusCode, want)
		}
	}
	// A logout naming no session (a guessed id) counts too.
	for i := 0; i < 4; i++ {
		req, _ := http.NewRequest(http.MethodPost, e.Srv.URL+"/ops/logout", nil)
		req.Header = from("198.51.100.11", http.Header{"Cookie": {"termhub_ops=" + strings.Repeat("A", 42) + string("AEIM"[i])}})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: http.StatusNoContent, false: http.StatusTooManyRequests}[i < 3]; resp.StatusCode != want {
			t.Fatalf("logout %d with a guessed session: HTTP %d, want %d", i, resp.StatusCode, want)
		}
	}
	if n := metricValue(t, e, `termhub_auth_failures_total{kind="ops"}`); n != 12 {
		t.Fatalf(`termhub_auth_failures_total{kind="ops"} = %v, want 12 (three logins, three bearers on each of two routes, three logouts; the 4th of each was refused before its check)`, n)
	}
}
