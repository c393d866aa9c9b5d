package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// env is one running hub for a test.
type env struct {
	t     *testing.T
	App   *app.App
	Clock *clock.Fake
	Srv   *httptest.Server
	Redis *redistest.Redis
	opts  client.Options

	mu      sync.Mutex
	clients map[string]*client.HTTP // one per API key, as one POS process has
}

// newEnv starts a hub. A log is written to the test output when TERMHUB_TEST_LOG is set.
func newEnv(t *testing.T) *env {
	t.Helper()
	return envFrom(t, apptest.Start(t, kit.Config))
}

// envFrom wraps a started hub in the harness.
func envFrom(t *testing.T, h *apptest.Env) *env {
	return &env{t: t, App: h.App, Clock: h.Clock, Srv: h.Srv, Redis: h.Redis, opts: client.Options{BaseURL: h.Srv.URL, Now: h.Clock.Now}}
}

// pos connects a POS with key id.
func (e *env) pos(id string) *client.Conn {
	e.t.Helper()
	return apptest.DialPOS(e.t, e.opts, id, kit.Secrets[id])
}

// terminal connects a terminal and waits until the hub has it online.
func (e *env) terminal(id string) *client.Conn {
	e.t.Helper()
	c := apptest.DialTerminal(e.t, e.opts, id, kit.Secrets[id])
	apptest.WaitOnline(e.t, e.App, id, c)
	return c
}

// http is the REST client of API key id. It is the same client each time,
// as in a POS process: it signs a repeat of an identical request for the
// next second, so the hub does not take it for a replay.
func (e *env) http(id string) *client.HTTP {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients == nil {
		e.clients = map[string]*client.HTTP{}
	}
	if e.clients[id] == nil {
		e.clients[id] = client.NewHTTP(e.opts, id, kit.Secrets[id])
	}
	return e.clients[id]
}

// read reads the next message of the given action, skipping others.
func read(t *testing.T, c *client.Conn, action string) client.Message {
	t.Helper()
	m, err := c.ReadUntil(kit.Ctx(t), action)
	if err != nil {
		t.Fatalf("waiting for %s: %v", action, err)
	}
	return m
}

// event decodes a durable POS message.
func event(t *testing.T, m client.Message) protocol.POSEvent {
	t.Helper()
	var ev protocol.POSEvent
	if err := m.Decode(&ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// send sends a client action with fields.
func send(t *testing.T, c *client.Conn, action string, fields map[string]any) {
	t.Helper()
	msg := map[string]any{"action": action}
	for k, v := range fields {
		msg[k] = v
	}
	if err := c.Send(kit.Ctx(t), msg); err != nil {
		t.Fatalf("send %s: %v", action, err)
	}
}

// reply reads the reply to action (or an error) and decodes it.
func reply(t *testing.T, c *client.Conn, action string) (protocol.Response, *protocol.Error) {
	t.Helper()
	for {
		m, err := c.Read(kit.Ctx(t))
		if err != nil {
			t.Fatalf("waiting for %sResponse: %v", action, err)
		}
		if m.Action == protocol.ActionError {
			return protocol.Response{}, m.Err()
		}
		if m.Action == protocol.ResponseAction(action) {
			var r protocol.Response
			if err := json.Unmarshal(m.Raw, &r); err != nil {
				t.Fatal(err)
			}
			return r, nil
		}
	}
}

// pay sends a payment and returns the reply.
func pay(t *testing.T, c *client.Conn, terminal string, minor int64, ref string) protocol.Response {
	t.Helper()
	send(t, c, "payment", map[string]any{"terminalId": terminal, "amountMinor": minor, "currency": "USD", "reference": ref})
	r, e := reply(t, c, "payment")
	if e != nil {
		t.Fatalf("payment refused: %v", e)
	}
	return r
}

// ---- the clock ----

// keepaliveSeq numbers keep-alive frames so each can be told from the others.
var keepaliveSeq atomic.Int64

// advance moves the fake clock forward by d like e.Clock.Advance, but in
// steps no longer than half a heartbeat interval, and between steps makes
// every connection in keep send a frame and waits until the hub has read it.
//
// Why: due timers run synchronously inside Clock.Advance, heartbeats
// included, and a test's client only answers a ping while it is reading. A
// single Advance of more than two heartbeat intervals (30 s with the
// harness's 15 s) therefore closes every connection as stale (4002) before
// a payment timeout or grace period is reached. A real client answers pings;
// a frame from it counts as a sign of life just the same (docs/protocol.md#connections), so
// the keep-alive frames stand in for the pongs.
//
// The POS keep-alive is listTerminals (answered by `terminals`, which
// read/reply skip); the terminal's is an unknown action with requestId
// "keepalive-N" (answered by an error that read skips and nextTerminal
// ignores).
func (e *env) advance(t *testing.T, d time.Duration, keep ...*client.Conn) {
	t.Helper()
	const step = 7500 * time.Millisecond
	for d > 0 {
		s := min(step, d)
		e.keepAlive(t, keep...)
		e.Clock.Advance(s)
		d -= s
	}
	e.keepAlive(t, keep...)
}

// keepAlive sends one frame on each connection and waits until the hub has
// recorded it (the connection's lastSeen equals the fake clock's now).
func (e *env) keepAlive(t *testing.T, conns ...*client.Conn) {
	t.Helper()
	for _, c := range conns {
		n := keepaliveSeq.Add(1)
		var msg map[string]any
		if isTerminal(c) {
			msg = map[string]any{"action": "keepalive", "requestId": fmt.Sprintf("keepalive-%d", n)}
		} else {
			msg = map[string]any{"action": "listTerminals", "requestId": fmt.Sprintf("keepalive-%d", n)}
		}
		if err := c.Send(kit.Ctx(t), msg); err != nil {
			t.Fatalf("keep-alive on %s: %v", c.ConnectionID(), err)
		}
	}
	now := e.Clock.Now()
	kit.Eventually(t, "the hub has seen every keep-alive", func() bool {
		seen := map[string]time.Time{}
		for _, ci := range e.App.Hub.Connections() {
			seen[ci.ConnectionID] = ci.LastSeen
		}
		for _, c := range conns {
			if at, ok := seen[c.ConnectionID()]; !ok || !at.Equal(now) {
				return false
			}
		}
		return true
	})
}

func isTerminal(c *client.Conn) bool {
	var g struct {
		DeviceID string `json:"deviceId"`
	}
	_ = c.Greeting.Decode(&g)
	return g.DeviceID != ""
}

func isKeepalive(m client.Message) bool {
	var v struct {
		RequestID string `json:"requestId"`
	}
	_ = m.Decode(&v)
	return strings.HasPrefix(v.RequestID, "keepalive-")
}

// ---- WebSocket ----

// shortCtx bounds a read that is expected to succeed at once.
func shortCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// inbox keeps, per connection, messages read while looking for another one,
// so that no helper here loses a message the way a plain ReadUntil does: the
// hub may push a durable message before the reply to the request that caused
// it (see TestReplyPrecedesOutcome).
var inbox sync.Map // *client.Conn → *[]client.Message

func buffered(c *client.Conn) *[]client.Message {
	v, _ := inbox.LoadOrStore(c, new([]client.Message))
	return v.(*[]client.Message)
}

// take returns the first message, buffered or new, that match accepts;
// messages passed over stay buffered in order (keep-alive answers are dropped).
func take(t *testing.T, c *client.Conn, what string, match func(client.Message) bool) client.Message {
	t.Helper()
	buf := buffered(c)
	for i, m := range *buf {
		if match(m) {
			*buf = append((*buf)[:i:i], (*buf)[i+1:]...)
			return m
		}
	}
	for {
		m, err := c.Read(shortCtx(t))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if isKeepalive(m) {
			continue
		}
		if match(m) {
			return m
		}
		*buf = append(*buf, m)
	}
}

// next returns the very next message on c, skipping only terminalStatusUpdate
// pushes and the answers to keep-alive frames (both may interleave anywhere).
func next(t *testing.T, c *client.Conn) client.Message {
	t.Helper()
	return take(t, c, "the next message", func(m client.Message) bool { return m.Action != protocol.ActionTerminalStatusUpdate })
}

// readFor reads until a message of action about transaction id arrives.
func readFor(t *testing.T, c *client.Conn, action, id string) client.Message {
	t.Helper()
	return take(t, c, action+" of "+id, func(m client.Message) bool {
		if m.Action != action {
			return false
		}
		var v struct {
			TransactionID string `json:"transactionId"`
		}
		_ = m.Decode(&v)
		return v.TransactionID == id
	})
}

// answer reads the reply to action, or an error reply.
func answer(t *testing.T, c *client.Conn, action string) (protocol.Response, *protocol.Error) {
	t.Helper()
	m := take(t, c, protocol.ResponseAction(action), func(m client.Message) bool {
		return m.Action == protocol.ActionError || m.Action == protocol.ResponseAction(action)
	})
	if m.Action == protocol.ActionError {
		return protocol.Response{}, m.Err()
	}
	var r protocol.Response
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r, nil
}

// sell sends a USD payment and returns the reply (pay without losing pushes).
func sell(t *testing.T, c *client.Conn, terminal string, minor int64, ref string) protocol.Response {
	t.Helper()
	return wsOK(t, c, "payment", map[string]any{"terminalId": terminal, "amountMinor": minor, "currency": "USD", "reference": ref})
}

// posEvent reads the durable POS message action about transaction id.
func posEvent(t *testing.T, pos *client.Conn, action, id string) protocol.POSEvent {
	t.Helper()
	return event(t, readFor(t, pos, action, id))
}

// command reads the terminal command action about transaction id.
func command(t *testing.T, term *client.Conn, action, id string) protocol.TerminalCommand {
	t.Helper()
	var cmd protocol.TerminalCommand
	if err := readFor(t, term, action, id).Decode(&cmd); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// startPayment reads the startPayment for transaction id.
func startPayment(t *testing.T, term *client.Conn, id string) protocol.StartPayment {
	t.Helper()
	var sp protocol.StartPayment
	if err := readFor(t, term, protocol.ActionStartPayment, id).Decode(&sp); err != nil {
		t.Fatal(err)
	}
	return sp
}

// wsErr sends action and expects an error reply with code and field.
func wsErr(t *testing.T, c *client.Conn, action string, fields map[string]any, code protocol.Code, field string) *protocol.Error {
	t.Helper()
	send(t, c, action, fields)
	r, e := answer(t, c, action)
	if e == nil {
		t.Fatalf("%s %v: got %s with %+v, want error %s", action, fields, r.Action, r.Transaction, code)
	}
	if e.Code != code || e.Field != field {
		t.Fatalf("%s %v: error %s field %q (%s), want %s field %q", action, fields, e.Code, e.Field, e.Message, code, field)
	}
	return e
}

// wsOK sends action and expects its reply.
func wsOK(t *testing.T, c *client.Conn, action string, fields map[string]any) protocol.Response {
	t.Helper()
	send(t, c, action, fields)
	r, e := answer(t, c, action)
	if e != nil {
		t.Fatalf("%s %v refused: %v", action, fields, e)
	}
	return r
}

// termSend sends a terminal message about transaction id.
func termSend(t *testing.T, term *client.Conn, action, id string, fields map[string]any) {
	t.Helper()
	f := map[string]any{"transactionId": id}
	for k, v := range fields {
		f[k] = v
	}
	send(t, term, action, f)
}

// approve sends an approved paymentResult and waits for its resultAck.
func approve(t *testing.T, term *client.Conn, id string) {
	t.Helper()
	termSend(t, term, "paymentResult", id, map[string]any{"outcome": "approved", "authCode": "A" + id[len(id)-4:],
		"maskedPan": "411111******1111", "cardScheme": "visa", "entryMode": "emv_chip"})
	command(t, term, protocol.ActionResultAck, id)
}

// completedSale runs a sale of minor USD on T1 through to COMPLETED and
// returns its id.
func completedSale(t *testing.T, pos, term *client.Conn, terminal string, minor int64, ref string) string {
	t.Helper()
	id := sell(t, pos, terminal, minor, ref).Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	approve(t, term, id)
	if ev := posEvent(t, pos, protocol.ActionPaymentComplete, id); ev.Transaction.Status != protocol.StatusCompleted {
		t.Fatalf("sale %s ended %s, want COMPLETED", id, ev.Transaction.Status)
	}
	return id
}

// dispatched creates a sale and lets the terminal take it (DISPATCHED).
func dispatched(t *testing.T, pos, term *client.Conn, terminal string, minor int64, ref string) string {
	t.Helper()
	id := sell(t, pos, terminal, minor, ref).Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	if ev := posEvent(t, pos, protocol.ActionPaymentStatusUpdate, id); ev.Transaction.Status != protocol.StatusDispatched {
		t.Fatalf("sale %s is %s, want DISPATCHED", id, ev.Transaction.Status)
	}
	return id
}

// ---- HTTP ----

// do sends a signed request as key and fails the test if no answer came.
func (e *env) do(t *testing.T, key, method, path string, body any, headers http.Header) *client.Response {
	t.Helper()
	resp, err := e.http(key).Do(kit.Ctx(t), method, path, body, headers)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// txnBody is {"transaction":{...},"created":bool}.
type txnBody struct {
	Transaction *protocol.Transaction `json:"transaction"`
	Created     *bool                 `json:"created"`
}

// doTxn sends a request that must answer status with a transaction.
func (e *env) doTxn(t *testing.T, key, method, path string, body any, headers http.Header, status int) txnBody {
	t.Helper()
	resp := e.do(t, key, method, path, body, headers)
	if resp.Status != status {
		t.Fatalf("%s %s: HTTP %d %s, want %d", method, path, resp.Status, resp.Body, status)
	}
	var b txnBody
	if err := resp.Decode(&b); err != nil || b.Transaction == nil {
		t.Fatalf("%s %s: body %s (%v)", method, path, resp.Body, err)
	}
	return b
}

// doErr sends a request that must fail with status, code and field.
func (e *env) doErr(t *testing.T, key, method, path string, body any, headers http.Header, status int, code protocol.Code, field string) {
	t.Helper()
	resp := e.do(t, key, method, path, body, headers)
	checkErr(t, method+" "+path, resp, status, code, field)
}

func checkErr(t *testing.T, what string, resp *client.Response, status int, code protocol.Code, field string) {
	t.Helper()
	var b struct {
		Error *protocol.Error `json:"error"`
	}
	if err := json.Unmarshal(resp.Body, &b); err != nil || b.Error == nil {
		t.Errorf("%s: HTTP %d body %.300s, want the error body {\"error\":{...}} (%v)", what, resp.Status, resp.Body, err)
		return
	}
	if resp.Status != status || b.Error.Code != code || b.Error.Field != field {
		t.Errorf("%s: HTTP %d %s field %q (%s), want HTTP %d %s field %q", what, resp.Status, b.Error.Code, b.Error.Field, b.Error.Message, status, code, field)
	}
}

// get returns a transaction of key's merchant over REST.
func (e *env) get(t *testing.T, key, id string) *protocol.Transaction {
	t.Helper()
	return e.doTxn(t, key, "GET", "/v1/transactions/"+id, nil, nil, http.StatusOK).Transaction
}

// sale is a POST /v1/payments body.
func sale(terminal string, minor int64, ref string) map[string]any {
	return map[string]any{"terminalId": terminal, "amountMinor": minor, "currency": "USD", "reference": ref}
}

func idem(key string) http.Header { return http.Header{"Idempotency-Key": []string{key}} }

// listPage is the body of GET /v1/transactions.
type listPage struct {
	Data       []protocol.Transaction `json:"data"`
	HasMore    bool                   `json:"hasMore"`
	NextCursor *string                `json:"nextCursor"`
}

func (e *env) list(t *testing.T, key, query string) (listPage, []byte) {
	t.Helper()
	resp := e.do(t, key, "GET", "/v1/transactions"+query, nil, nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /v1/transactions%s: HTTP %d %s", query, resp.Status, resp.Body)
	}
	var p listPage
	if err := resp.Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p, resp.Body
}

func ids(ts []protocol.Transaction) []string {
	out := make([]string, len(ts))
	for i, x := range ts {
		out[i] = x.ID
	}
	return out
}
