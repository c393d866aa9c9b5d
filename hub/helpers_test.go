package hub_test

// The test harness: a real hub behind a real listener (httptest), with the
// HTTP API (package httpapi) on the same mux as a node has it, driven by a
// fake clock, with POS and terminal peers that connect through package
// client exactly as integrators do. Nothing here sleeps to wait for a
// condition: reads block with a deadline, state is polled with eventually.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/httpapi"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// waitFor bounds every wait of the tests: a read, a poll, a drain.
const waitFor = 5 * time.Second

// t0 is where every fake clock starts.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// secrets of the test configuration, by key or device id. They are distinct
// strings so that a test can check that none of them leaks into a body.
var secrets = map[string]string{
	"pk1":  "sk1-secret-of-m1-front",
	"pk1b": "sk1b-secret-of-m1-back",
	"pk2":  "sk2-secret-of-m2",
	"T1":   "dk-T1-device-secret",
	"T2":   "dk-T2-device-secret",
	"U1":   "dk-U1-device-secret",
}

const opsToken = "ops-secret"

// testConfig has two merchants: m1 with keys pk1/pk1b and terminals T1, T2;
// m2 with key pk2 and terminal U1.
func testConfig(t *testing.T) *config.Directory {
	t.Helper()
	return config.NewDirectory(parseTestConfig(t))
}

func parseTestConfig(t *testing.T) config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
ops_token: %q
merchants:
  - id: m1
    name: Merchant One
    api_keys:
      - {id: pk1, secret: %q}
      - {id: pk1b, secret: %q}
    terminals:
      - {device_id: T1, secret: %q, label: Front counter}
      - {device_id: T2, secret: %q, label: Back counter}
  - id: m2
    name: Merchant Two
    api_keys:
      - {id: pk2, secret: %q}
    terminals:
      - {device_id: U1, secret: %q, label: Kiosk}
`, opsToken, secrets["pk1"], secrets["pk1b"], secrets["T1"], secrets["T2"], secrets["pk2"], secrets["U1"])
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}

// testHub is a hub serving on a real loopback listener.
type testHub struct {
	*hub.Hub
	handler http.Handler // the hub's and the HTTP API's routes, timed
	srv     *httptest.Server
	clock   *clock.Fake
	logs    *kit.LogBuffer // the hub's log, JSON lines
}

// newTestHub starts a hub with a 15 s heartbeat and a 60 s grace period on a
// fake clock; opts may change the options before the hub is built. The hub
// is drained and the server closed when the test ends; the hub's log is
// shown only if the test failed.
func newTestHub(t *testing.T, opts ...func(*hub.Options)) *testHub {
	t.Helper()
	fake := clock.NewFake(t0)
	logs := &kit.LogBuffer{}
	o := hub.Options{
		Directory:         testConfig(t),
		Clock:             fake,
		Logger:            zerolog.New(logs).With().Timestamp().Logger(),
		HeartbeatInterval: 15 * time.Second,
		GracePeriod:       60 * time.Second,
		OpsToken:          opsToken,
	}
	for _, f := range opts {
		f(&o)
	}
	h := hub.New(o)
	handler := serve(h, o)
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
		defer cancel()
		if err := h.Drain(ctx); err != nil {
			t.Errorf("draining the hub at the end of the test: %v", err)
		}
		srv.Close()
		if t.Failed() {
			t.Logf("hub log:\n%s", logs.String())
		}
	})
	return &testHub{Hub: h, handler: handler, srv: srv, clock: fake, logs: logs}
}

// serve puts the hub's routes and the HTTP API's on one mux, as package app
// does, with what the API needs from the hub's options.
func serve(h *hub.Hub, o hub.Options) http.Handler {
	ao := httpapi.Options{Hub: h, Outbox: o.Outbox, Clock: o.Clock, Logger: o.Logger, RequestTimeout: o.RequestTimeout}
	if e, ok := o.Engine.(httpapi.Engine); ok {
		ao.Engine = e
	}
	if s, ok := o.Sessions.(httpapi.Sessions); ok {
		ao.Sessions = s
	}
	if hl, ok := o.Health.(httpapi.Health); ok {
		ao.Health = hl
	}
	api := httpapi.New(ao)
	mux := http.NewServeMux()
	h.Register(mux)
	api.Register(mux)
	return api.Timed(mux)
}

// Handler serves the hub's routes and the HTTP API's.
func (th *testHub) Handler() http.Handler { return th.handler }

// withHeartbeat sets the heartbeat interval, e.g. to an hour so that a test
// of another timer can advance the clock in big steps without the hub
// closing its connections as stale.
func withHeartbeat(d time.Duration) func(*hub.Options) {
	return func(o *hub.Options) { o.HeartbeatInterval = d }
}

// options are the client options of the hub: signatures use the fake clock.
func (th *testHub) options() client.Options {
	return client.Options{BaseURL: th.srv.URL, Now: th.clock.Now, HTTPClient: th.srv.Client()}
}

// skewed returns client options signing at the fake time plus skew.
func (th *testHub) skewed(skew time.Duration) client.Options {
	o := th.options()
	o.Now = func() time.Time { return th.clock.Now().Add(skew) }
	return o
}

// pos connects a POS with key keyID and starts reading it.
func (th *testHub) pos(t *testing.T, keyID string) *peer {
	t.Helper()
	return th.posWith(t, th.options(), keyID)
}

// posWith connects a POS with key keyID and opts, and starts reading it.
func (th *testHub) posWith(t *testing.T, opts client.Options, keyID string) *peer {
	t.Helper()
	return startPeer(t, "POS "+keyID, apptest.DialPOS(t, opts, keyID, secrets[keyID]))
}

// terminal connects a terminal with device id deviceID and starts reading it.
func (th *testHub) terminal(t *testing.T, deviceID string) *peer {
	t.Helper()
	return th.terminalWith(t, th.options(), deviceID)
}

// terminalWith connects terminal deviceID with opts, and starts reading it.
func (th *testHub) terminalWith(t *testing.T, opts client.Options, deviceID string) *peer {
	t.Helper()
	return startPeer(t, "terminal "+deviceID, apptest.DialTerminal(t, opts, deviceID, secrets[deviceID]))
}

// signedHeader returns the credential headers of a GET of path signed at
// time at with secret.
func signedHeader(idHeader, id, secret, path string, at time.Time) http.Header {
	ts := protocol.Timestamp(at)
	h := http.Header{}
	h.Set(idHeader, id)
	h.Set(protocol.HeaderTimestamp, ts)
	h.Set(protocol.HeaderSignature, protocol.Sign(secret, http.MethodGet, path, ts, nil))
	return h
}

// dialWS opens a WebSocket to pathWithQuery with exactly the headers given,
// bypassing package client, for what a well-behaved client never does.
func (th *testHub) dialWS(t *testing.T, pathWithQuery string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, th.srv.URL+pathWithQuery, &websocket.DialOptions{
		HTTPClient: th.srv.Client(), HTTPHeader: header, CompressionMode: websocket.CompressionDisabled,
	})
	if err == nil {
		ws.SetReadLimit(client.ReadLimit)
		t.Cleanup(func() { _ = ws.CloseNow() })
	}
	return ws, resp, err
}

// refused dials pathWithQuery expecting the hub to refuse the upgrade, and
// returns the HTTP status and body of the refusal.
func (th *testHub) refused(t *testing.T, pathWithQuery string, header http.Header) (int, []byte) {
	t.Helper()
	_, resp, err := th.dialWS(t, pathWithQuery, header)
	if err == nil {
		t.Fatalf("upgrade of %s accepted, want it refused", pathWithQuery)
	}
	if resp == nil {
		t.Fatalf("upgrade of %s failed without an HTTP answer: %v", pathWithQuery, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// rawPOS connects a POS without package client and reads its greeting; the
// connection is then left alone (it answers pings only while read).
func (th *testHub) rawPOS(t *testing.T, keyID string) *websocket.Conn {
	t.Helper()
	return th.raw(t, client.POSPath, protocol.HeaderAPIKey, keyID)
}

// rawTerminal is rawPOS for a terminal.
func (th *testHub) rawTerminal(t *testing.T, deviceID string) *websocket.Conn {
	t.Helper()
	return th.raw(t, client.TerminalPath, protocol.HeaderDeviceID, deviceID)
}

func (th *testHub) raw(t *testing.T, path, idHeader, id string) *websocket.Conn {
	t.Helper()
	ws, _, err := th.dialWS(t, path, signedHeader(idHeader, id, secrets[id], path, th.clock.Now()))
	if err != nil {
		t.Fatalf("%s: dial: %v", id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("%s: reading greeting: %v", id, err)
	}
	if got := decodeMap(t, data)["action"]; got != protocol.ActionConnected {
		t.Fatalf("%s: first message %s, want connected", id, data)
	}
	return ws
}

// rest is a signed REST client of API key keyID.
func (th *testHub) rest(keyID string) *client.HTTP {
	return client.NewHTTP(th.options(), keyID, secrets[keyID])
}

// restGet sends a signed GET of key keyID; extra headers replace the
// credentials (a test's tampering).
func (th *testHub) restGet(t *testing.T, keyID, pathWithQuery string, extra http.Header) *client.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := th.rest(keyID).Do(ctx, http.MethodGet, pathWithQuery, nil, extra)
	if err != nil {
		t.Fatalf("GET %s: %v", pathWithQuery, err)
	}
	return resp
}

// get sends an unsigned GET (ops, health) with header.
func (th *testHub) get(t *testing.T, path string, header http.Header) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, th.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := th.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, body
}

// opsTerminals is the answer of GET /v1/ops/terminals.
type opsTerminals struct {
	Data        []protocol.TerminalInfo `json:"data"`
	Connections []hub.ConnInfo          `json:"connections"`
	Conflicts   []hub.KeyConflict       `json:"conflicts"`
}

func (th *testHub) ops(t *testing.T) opsTerminals {
	t.Helper()
	status, body := th.get(t, "/v1/ops/terminals", http.Header{"Authorization": {"Bearer " + opsToken}})
	if status != http.StatusOK {
		t.Fatalf("GET /v1/ops/terminals: HTTP %d %s", status, body)
	}
	var o opsTerminals
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatalf("GET /v1/ops/terminals: %v in %s", err, body)
	}
	return o
}

// logged reports whether the hub logged a line with all the given fields.
func (th *testHub) logged(fields map[string]any) bool {
	for _, line := range strings.Split(th.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		all := true
		for k, v := range fields {
			if !reflect.DeepEqual(m[k], v) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// waitTimers waits until n timers are armed on the fake clock. A connection
// arms its heartbeat after its greeting is on the way, so a test must wait
// for it before advancing the clock, or the first tick lands late.
func (th *testHub) waitTimers(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d timers armed on the fake clock", n), func() bool { return th.clock.Pending() == n })
}

// waitSeen waits until the hub has heard from every given connection at the
// current fake time (a pong to the heartbeat that time just triggered).
func (th *testHub) waitSeen(t *testing.T, connIDs ...string) {
	t.Helper()
	now := th.clock.Now()
	eventually(t, fmt.Sprintf("a sign of life at %s from %v", now.Format(time.TimeOnly), connIDs), func() bool {
		seen := map[string]bool{}
		for _, c := range th.Connections() {
			if c.LastSeen.Equal(now) {
				seen[c.ConnectionID] = true
			}
		}
		for _, id := range connIDs {
			if !seen[id] {
				return false
			}
		}
		return true
	})
}

// connectionIDs lists the hub's live connection ids, sorted.
func (th *testHub) connectionIDs() []string {
	var ids []string
	for _, c := range th.Connections() {
		ids = append(ids, c.ConnectionID)
	}
	sort.Strings(ids)
	return ids
}

// drain drains the hub, expecting every connection to finish in time.
func (th *testHub) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := th.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// eventually is the kit's: it polls cond until it holds, failing the test
// after 5 s.
var eventually = kit.Eventually

// peer is a client connection whose messages are read by a goroutine, so
// that it answers pings and closes like a live client while the test takes
// messages at its own pace.
type peer struct {
	name string
	conn *client.Conn
	msgs chan client.Message
	done chan struct{} // closed when reading ended; err says why
	err  error
	seq  int // barrier request ids
}

func startPeer(t *testing.T, name string, c *client.Conn) *peer {
	p := &peer{name: name, conn: c, msgs: make(chan client.Message, 256), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(p.done)
		for {
			m, err := c.Read(ctx)
			if err != nil {
				p.err = err
				return
			}
			select {
			case p.msgs <- m:
			case <-ctx.Done():
				p.err = ctx.Err()
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.CloseNow()
		cancel()
		<-p.done
	})
	return p
}

// ID is the connection id the hub greeted the peer with.
func (p *peer) ID() string { return p.conn.ConnectionID() }

// Greeting is the connected message the peer was greeted with.
func (p *peer) Greeting() client.Message { return p.conn.Greeting }

// next returns the next message, failing if none comes in time or the
// connection ends first.
func (p *peer) next(t *testing.T) client.Message {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case m := <-p.msgs:
		return m
	case <-p.done:
		select {
		case m := <-p.msgs:
			return m
		default:
		}
		t.Fatalf("%s: connection ended (%v, close code %d) while a message was expected", p.name, p.err, client.CloseCode(p.err))
	case <-timer.C:
		t.Fatalf("%s: no message within %s", p.name, waitFor)
	}
	return client.Message{}
}

// nextSkipping is next, passing over messages with the given actions.
func (p *peer) nextSkipping(t *testing.T, skip ...string) client.Message {
	t.Helper()
	for {
		m := p.next(t)
		if !contains(skip, m.Action) {
			return m
		}
	}
}

// expect returns the next message, which must have action.
func (p *peer) expect(t *testing.T, action string) client.Message {
	t.Helper()
	m := p.next(t)
	if m.Action != action {
		t.Fatalf("%s: got %s, want action %q", p.name, m.Raw, action)
	}
	return m
}

// expectClosed waits for the connection to end with close code, with no
// message left unread before the close.
func (p *peer) expectClosed(t *testing.T, code int) {
	t.Helper()
	p.waitEnded(t)
	select {
	case m := <-p.msgs:
		t.Fatalf("%s: unexpected message before the close: %s", p.name, m.Raw)
	default:
	}
	if got := client.CloseCode(p.err); got != code {
		t.Fatalf("%s: connection ended with %v (close code %d), want close code %d", p.name, p.err, got, code)
	}
}

// waitEnded waits for the connection to end, whatever the reason.
func (p *peer) waitEnded(t *testing.T) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		t.Fatalf("%s: still connected after %s", p.name, waitFor)
	}
}

// alive reports whether the connection has not ended.
func (p *peer) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// send sends a protocol action with requestID.
func (p *peer) send(t *testing.T, action, requestID string, body any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := p.conn.SendAction(ctx, action, requestID, body); err != nil {
		t.Fatalf("%s: sending %s: %v", p.name, action, err)
	}
}

// sendRaw sends one frame as given.
func (p *peer) sendRaw(t *testing.T, typ websocket.MessageType, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := p.conn.SendRaw(ctx, typ, data); err != nil {
		t.Fatalf("%s: sending a raw frame: %v", p.name, err)
	}
}

// barrier sends listTerminals and requires its reply to be the very next
// message: everything the hub queued for this connection before it read
// the request has then been seen, so a test can assert that nothing was
// pushed without waiting for a timeout. It returns the terminals.
func (p *peer) barrier(t *testing.T) []protocol.TerminalInfo {
	t.Helper()
	p.seq++
	id := fmt.Sprintf("barrier-%d", p.seq)
	p.send(t, protocol.ActionListTerminals, id, nil)
	m := p.next(t)
	var r struct {
		Action    string                  `json:"action"`
		RequestID string                  `json:"requestId"`
		Terminals []protocol.TerminalInfo `json:"terminals"`
	}
	if err := m.Decode(&r); err != nil || r.Action != protocol.ActionTerminals || r.RequestID != id {
		t.Fatalf("%s: got %s, want the terminals reply to %s first", p.name, m.Raw, id)
	}
	return r.Terminals
}

// expectForceDisconnect requires the next message to be exactly the
// forceDisconnect with reason, message and reconnectAllowed, followed by the
// close code.
func (p *peer) expectForceDisconnect(t *testing.T, reason, message string, reconnect bool, code int) {
	t.Helper()
	p.forceDisconnected(t, p.next(t), reason, message, reconnect, code)
}

// expectForceDisconnectSkipping is expectForceDisconnect passing over
// messages with the given actions first.
func (p *peer) expectForceDisconnectSkipping(t *testing.T, skip []string, reason, message string, reconnect bool, code int) {
	t.Helper()
	p.forceDisconnected(t, p.nextSkipping(t, skip...), reason, message, reconnect, code)
}

func (p *peer) forceDisconnected(t *testing.T, m client.Message, reason, message string, reconnect bool, code int) {
	t.Helper()
	want := map[string]any{"action": protocol.ActionForceDisconnect, "reason": reason, "message": message, "reconnectAllowed": reconnect}
	if got := decodeMap(t, m.Raw); !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %s, want exactly %s", p.name, m.Raw, mustJSON(t, want))
	}
	p.expectClosed(t, code)
}

// expectStatus requires the next message to be a terminalStatusUpdate for
// terminalID with the given connection and statuses, at the current fake
// time.
func (p *peer) expectStatus(t *testing.T, now time.Time, terminalID, connID, prev, status string) {
	t.Helper()
	m := p.next(t)
	want := map[string]any{
		"action": protocol.ActionTerminalStatusUpdate, "terminalId": terminalID, "connectionId": connID,
		"status": status, "previousStatus": prev, "timestamp": now.UTC().Format(time.RFC3339Nano),
	}
	if got := decodeMap(t, m.Raw); !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %s, want exactly %s", p.name, m.Raw, mustJSON(t, want))
	}
}

// statusLog records every terminalStatusUpdate the hub publishes (the ops
// feed's view), to check afterwards what was and was not said.
type statusLog struct {
	mu      sync.Mutex
	updates []protocol.TerminalStatusUpdate
}

func recordStatus(h *hub.Hub) *statusLog {
	l := &statusLog{}
	h.Observe(l)
	return l
}

// TerminalStatus records u.
func (l *statusLog) TerminalStatus(_ string, u protocol.TerminalStatusUpdate) {
	l.mu.Lock()
	l.updates = append(l.updates, u)
	l.mu.Unlock()
}

// Connection ignores connections.
func (l *statusLog) Connection(string, hub.ConnectionUpdate) {}

// summary lists the updates as "terminal connection previous→status".
func (l *statusLog) summary() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.updates))
	for _, u := range l.updates {
		out = append(out, fmt.Sprintf("%s %s %s→%s", u.TerminalID, u.ConnectionID, u.PreviousStatus, u.Status))
	}
	return out
}

// decodeMap decodes a JSON object.
func decodeMap(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %.300s", err, data)
	}
	return m
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertError checks an HTTP error answer: status, the one error body
// {"error":{"code","message","field"?}} with code and field, a message
// containing msgPart, and none of the forbidden strings anywhere.
func assertError(t *testing.T, status int, body []byte, wantStatus int, code protocol.Code, field, msgPart string, forbidden ...string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("HTTP %d %s, want %d", status, body, wantStatus)
	}
	top := decodeMap(t, body)
	if len(top) != 1 || top["error"] == nil {
		t.Fatalf("body %s, want exactly {\"error\":{...}}", body)
	}
	var b struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	for k := range b.Error {
		if k != "code" && k != "message" && k != "field" {
			t.Errorf("error body has unexpected key %q: %s", k, body)
		}
	}
	if b.Error["code"] != string(code) {
		t.Errorf("error code %v, want %q (%s)", b.Error["code"], code, body)
	}
	msg, _ := b.Error["message"].(string)
	if msg == "" || !strings.Contains(msg, msgPart) {
		t.Errorf("error message %q, want it to mention %q", msg, msgPart)
	}
	gotField, _ := b.Error["field"].(string)
	if gotField != field {
		t.Errorf("error field %q, want %q (%s)", gotField, field, body)
	}
	for _, s := range forbidden {
		if s != "" && bytes.Contains(body, []byte(s)) {
			t.Errorf("error body %s contains %q", body, s)
		}
	}
}

// allSecrets lists every configured secret and the ops token.
func allSecrets() []string {
	out := []string{opsToken}
	for _, s := range secrets {
		out = append(out, s)
	}
	return out
}

var connIDPattern = regexp.MustCompile(`^conn_[0-9a-f]{24}$`)

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// jsonFrame returns a valid JSON listTerminals frame of exactly n bytes.
func jsonFrame(t *testing.T, requestID string, n int) []byte {
	t.Helper()
	prefix := `{"action":"listTerminals","requestId":"` + requestID + `","pad":"`
	pad := n - len(prefix) - len(`"}`)
	if pad < 0 {
		t.Fatalf("frame of %d bytes is too small", n)
	}
	b := []byte(prefix + strings.Repeat("x", pad) + `"}`)
	if len(b) != n || !json.Valid(b) {
		t.Fatalf("built a frame of %d bytes, want %d valid JSON", len(b), n)
	}
	return b
}
