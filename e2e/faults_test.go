package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/faultproxy"
	"github.com/termhub/termhub/internal/redisproc"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// These tests stall, kill and restart a real Redis of their own under a
// whole App on the wall clock (docs/ops.md#when-redis-stalls-restarts-or-fails-over): nothing committed may be
// lost, every request is answered within request_timeout, and connections
// stay up.

// faultConfig answers every request within 1 s and pings every 300 ms, so
// that a stall of a few seconds spans many heartbeats.
const faultConfig = `
grace_period: 60s
payment_timeout: 180s
heartbeat_interval: 300ms
signature_timeout: 60s
request_timeout: 1s
merchants:
  - id: m1
    name: Shop One
    api_keys:
      - {id: pk1, secret: sk1}
      - {id: pk1b, secret: sk1b}
    terminals:
      - {device_id: T1, secret: dt1}
      - {device_id: T2, secret: dt2}
      - {device_id: T3, secret: dt3}
      - {device_id: T4, secret: dt4}
      - {device_id: T5, secret: dt5}
      - {device_id: T6, secret: dt6}
`

var faultSecrets = map[string]string{"pk1": "sk1", "pk1b": "sk1b", "T1": "dt1", "T2": "dt2", "T3": "dt3", "T4": "dt4", "T5": "dt5", "T6": "dt6"}

// requestTimeout is faultConfig's; answerSlack is what a test allows on
// top of it for the answer to travel and be read, on a busy machine (the
// tests run with the race detector, beside other packages' tests).
const (
	requestTimeout = time.Second
	answerSlack    = time.Second
)

// faultEnv is a hub on a private Redis the test controls.
type faultEnv struct {
	*env
	redis *redisproc.Server
}

// newFaultEnv starts a private Redis with the append-only file on (so a
// restart keeps what it acknowledged) and a hub on it.
func newFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	srv := redisproc.Start(t, redisproc.Options{AppendOnly: true})
	return hubOn(t, srv, srv.URL())
}

// hubOn starts a hub on the wall clock that reaches srv at url.
func hubOn(t *testing.T, srv *redisproc.Server, url string) *faultEnv {
	t.Helper()
	h := apptest.Start(t, faultConfig, apptest.WallClock(), apptest.OnRedis(url))
	return &faultEnv{env: &env{t: t, App: h.App, Srv: h.Srv, Redis: h.Redis, opts: client.Options{BaseURL: h.Srv.URL}}, redis: srv}
}

// peer is a connection whose frames are read as they come, by a goroutine
// of its own, so that it answers the hub's pings the way a real client
// does, and the test takes them from a queue.
type peer struct {
	t    *testing.T
	c    *client.Conn
	in   chan client.Message
	kept []client.Message // read, and not yet taken by next
	mu   sync.Mutex
	err  error // why reading ended; guarded by mu
	done chan struct{}
}

func newPeer(t *testing.T, c *client.Conn) *peer {
	p := &peer{t: t, c: c, in: make(chan client.Message, 1024), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			m, err := c.Read(context.Background())
			if err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
				return
			}
			p.in <- m
		}
	}()
	t.Cleanup(func() { _ = c.CloseNow(); <-p.done })
	return p
}

func (e *faultEnv) dialPOS(id string) *peer {
	e.t.Helper()
	return newPeer(e.t, apptest.DialPOS(e.t, e.opts, id, faultSecrets[id]))
}

func (e *faultEnv) dialTerminal(id string) *peer {
	e.t.Helper()
	c := apptest.DialTerminal(e.t, e.opts, id, faultSecrets[id])
	apptest.WaitOnline(e.t, e.App, id, c)
	return newPeer(e.t, c)
}

// next returns the first message of the action ("": any) that match
// accepts (nil: any), within d; the others stay for later calls.
func (p *peer) next(action string, d time.Duration, match func(client.Message) bool) client.Message {
	p.t.Helper()
	ok := func(m client.Message) bool { return (action == "" || m.Action == action) && (match == nil || match(m)) }
	for i, m := range p.kept {
		if ok(m) {
			p.kept = append(p.kept[:i:i], p.kept[i+1:]...)
			return m
		}
	}
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		select {
		case m := <-p.in:
			if ok(m) {
				return m
			}
			p.kept = append(p.kept, m)
		case <-timeout.C:
			p.t.Fatalf("no %s within %s (connection: %v)", action, d, p.readErr())
		case <-p.done:
			p.t.Fatalf("connection ended waiting for %s: %v", action, p.readErr())
		}
	}
}

func (p *peer) readErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// send sends a message and fails the test if it cannot.
func (p *peer) send(action, requestID string, body any) {
	p.t.Helper()
	if err := p.c.SendAction(kit.Ctx(p.t), action, requestID, body); err != nil {
		p.t.Fatalf("send %s: %v", action, err)
	}
}

// forTxn matches a message about transaction id.
func forTxn(id string) func(client.Message) bool {
	return func(m client.Message) bool {
		var v struct {
			TransactionID string `json:"transactionId"`
		}
		_ = m.Decode(&v)
		return v.TransactionID == id
	}
}

// withStatus matches a durable message about id in status s.
func withStatus(id string, s protocol.Status) func(client.Message) bool {
	return func(m client.Message) bool {
		var ev protocol.POSEvent
		_ = m.Decode(&ev)
		return ev.TransactionID == id && ev.Transaction != nil && ev.Transaction.Status == s
	}
}

// errorCode matches an error reply with code c.
func errorCode(c protocol.Code) func(client.Message) bool {
	return func(m client.Message) bool { e := m.Err(); return e != nil && e.Code == c }
}

// inProgress makes a sale on terminal term reach IN_PROGRESS, as the POS
// sees it, and returns its id.
func (e *faultEnv) inProgress(pos, term *peer, device, ref string, extra map[string]any) string {
	e.t.Helper()
	body := map[string]any{"terminalId": device, "amountMinor": 1250, "currency": "USD", "reference": ref}
	for k, v := range extra {
		body[k] = v
	}
	pos.send(protocol.ActionPayment, ref, body)
	m := pos.next("", 5*time.Second, func(m client.Message) bool { return m.Action == "paymentResponse" || m.Err() != nil })
	var res protocol.Response
	if err := m.Decode(&res); err != nil || res.Transaction == nil {
		e.t.Fatalf("paymentResponse: %v %s", err, m.Raw)
	}
	id := res.Transaction.ID
	term.next(protocol.ActionStartPayment, 5*time.Second, forTxn(id))
	term.send(protocol.ActionCommandReceived, "cr-"+id, protocol.CommandReceived{TransactionID: id})
	term.send(protocol.ActionPaymentProgress, "pp-"+id, protocol.PaymentProgress{TransactionID: id, Stage: "card_presented"})
	pos.next(protocol.ActionPaymentStatusUpdate, 5*time.Second, withStatus(id, protocol.StatusInProgress))
	return id
}

func approval(id string) protocol.PaymentResult {
	return protocol.PaymentResult{TransactionID: id, Outcome: protocol.OutcomeApproved, AuthCode: "A" + id[len(id)-4:],
		ResponseCode: "00", CardScheme: "visa", MaskedPAN: "411111******1111", EntryMode: "contactless"}
}

// TestFinalCommittedDuringAStallReachesTheLivePOS: the terminal's approval
// arrives while Redis is stopped; the terminal is told unavailable; when
// Redis resumes, the POS gets paymentComplete on the connection it has had
// all along (not only on a reconnect), the terminal its resultAck, and
// after the POS acks it nothing comes back.
func TestFinalCommittedDuringAStallReachesTheLivePOS(t *testing.T) {
	e := newFaultEnv(t)
	pos, term := e.dialPOS("pk1"), e.dialTerminal("T1")
	id := e.inProgress(pos, term, "T1", "stall-final", nil)

	if err := e.redis.Stall(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	term.send(protocol.ActionPaymentResult, "pr-"+id, approval(id))
	term.next(protocol.ActionError, requestTimeout+answerSlack, errorCode(protocol.CodeUnavailable))
	if took := time.Since(sent); took > requestTimeout+answerSlack {
		t.Errorf("the terminal's result was answered after %s, want within request_timeout (%s)", took, requestTimeout)
	}
	stalledFor := 2 * time.Second
	time.Sleep(stalledFor - time.Since(sent)) // the outage's length is the scenario, not a wait for a condition
	if err := e.redis.Resume(); err != nil {
		t.Fatal(err)
	}

	m := pos.next(protocol.ActionPaymentComplete, 10*time.Second, withStatus(id, protocol.StatusCompleted))
	term.next(protocol.ActionResultAck, 10*time.Second, forTxn(id))
	if err := pos.c.Ack(kit.Ctx(t), m.MessageID()); err != nil {
		t.Fatal(err)
	}
	// The ack is stored once a later request is answered (acks.go).
	pos.send(protocol.ActionGetTransactionStatus, "status", protocol.GetTransactionStatusRequest{TransactionID: id})
	pos.next("transactionStatus", 5*time.Second, nil)

	// Acknowledged, it is gone: a new connection has nothing to replay.
	cursor, err := e.App.Outbox.Cursor(kit.Ctx(t), "m1", "pk1")
	if err != nil || queue.CompareIDs(cursor, m.MessageID()) < 0 {
		t.Fatalf("ack cursor %s (%v), want at least %s", cursor, err, m.MessageID())
	}
	if left, err := e.App.Outbox.After(kit.Ctx(t), "m1", "pk1", cursor, 10); err != nil || len(left) != 0 {
		t.Fatalf("after the ack the outbox still holds %d messages (%v)", len(left), err)
	}
}

// TestApprovalDuringARedisRestartIsNotLost: Redis is killed while a sale
// is on the card and comes back 2 s later with its AOF; the terminal's
// approval, answered unavailable, ends COMPLETED and reaches the POS long
// before the payment's 10 s timeout, and a decline in flight on another
// terminal ends DECLINED, freeing its terminal.
func TestApprovalDuringARedisRestartIsNotLost(t *testing.T) {
	e := newFaultEnv(t)
	pos, t1, t2 := e.dialPOS("pk1"), e.dialTerminal("T1"), e.dialTerminal("T2")
	approved := e.inProgress(pos, t1, "T1", "restart-approve", map[string]any{"timeoutSeconds": 10})
	declined := e.inProgress(pos, t2, "T2", "restart-decline", map[string]any{"timeoutSeconds": 10})

	if err := e.redis.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t1.send(protocol.ActionPaymentResult, "pr-"+approved, approval(approved))
	t2.send(protocol.ActionPaymentResult, "pr-"+declined, protocol.PaymentResult{TransactionID: declined, Outcome: protocol.OutcomeDeclined, ResponseCode: "05"})
	t1.next(protocol.ActionError, requestTimeout+answerSlack, errorCode(protocol.CodeUnavailable))
	t2.next(protocol.ActionError, requestTimeout+answerSlack, errorCode(protocol.CodeUnavailable))
	time.Sleep(2*time.Second - time.Since(killed)) // the outage's length is the scenario
	if err := e.redis.Restart(); err != nil {
		t.Fatal(err)
	}

	pos.next(protocol.ActionPaymentComplete, 6*time.Second, withStatus(approved, protocol.StatusCompleted))
	pos.next(protocol.ActionPaymentComplete, 6*time.Second, withStatus(declined, protocol.StatusDeclined))
	t1.next(protocol.ActionResultAck, 5*time.Second, forTxn(approved))
	t2.next(protocol.ActionResultAck, 5*time.Second, forTxn(declined))
	// T2 is free again: a new sale is not device_busy.
	pos.send(protocol.ActionPayment, "after", map[string]any{"terminalId": "T2", "amountMinor": 500, "currency": "USD", "reference": "restart-next"})
	if r := pos.next("paymentResponse", 5*time.Second, nil); r.Err() != nil {
		t.Fatalf("a sale on T2 after the decline: %v", r.Err())
	}
}

// TestRequestsDuringAStallAreAnsweredInTimeAndConverge: sales created over
// REST while Redis is stopped are each answered within request_timeout,
// 201 or 503; once Redis resumes, retrying each reference converges on one
// transaction, and every transaction that exists has reached its terminal
// (none is left PENDING without its startPayment, whatever its 503 said).
// The first sales go straight to their commit (the hub knows the terminals
// are free), so their commits wait in the stopped Redis and run when it
// wakes: they are created though answered 503.
func TestRequestsDuringAStallAreAnsweredInTimeAndConverge(t *testing.T) {
	e := newFaultEnv(t)
	devices := []string{"T1", "T2", "T3", "T4", "T5", "T6"}
	terms := map[string]*peer{}
	pos := e.dialPOS("pk1")
	for _, d := range devices {
		terms[d] = e.dialTerminal(d)
		id := e.inProgress(pos, terms[d], d, "before-"+d, nil)
		terms[d].send(protocol.ActionPaymentResult, "pr-"+id, approval(id))
		terms[d].next(protocol.ActionResultAck, 5*time.Second, forTxn(id))
	}
	h := client.NewHTTP(e.opts, "pk1", "sk1")
	if err := e.redis.Stall(); err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	type answer struct {
		status int
		took   time.Duration
		err    error
	}
	answers := make([]answer, len(devices))
	var wg sync.WaitGroup
	for i, d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := h.Do(rctx, http.MethodPost, "/v1/payments", sale(d, 700, "stall-"+d), nil)
			answers[i] = answer{took: time.Since(start), err: err}
			if err == nil {
				answers[i].status = resp.Status
				if resp.Status == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
					answers[i].err = fmt.Errorf("503 without Retry-After")
				}
			}
		}()
		time.Sleep(150 * time.Millisecond) // requests spread over the stall, as a POS would send them
	}
	wg.Wait()
	time.Sleep(3*time.Second - time.Since(stalled)) // the outage's length is the scenario
	if err := e.redis.Resume(); err != nil {
		t.Fatal(err)
	}
	for i, a := range answers {
		if a.err != nil || (a.status != http.StatusCreated && a.status != http.StatusServiceUnavailable) || a.took > requestTimeout+answerSlack {
			t.Errorf("sale on %s during the stall: HTTP %d after %s (%v); want 201 or 503 within request_timeout", devices[i], a.status, a.took, a.err)
		}
	}
	// Retried until answered: one transaction per reference, and its
	// terminal got it.
	for _, d := range devices {
		var txn protocol.Transaction
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := h.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", sale(d, 700, "stall-"+d), nil)
			if err == nil && (resp.Status == http.StatusOK || resp.Status == http.StatusCreated) {
				var body struct{ Transaction protocol.Transaction }
				if err := resp.Decode(&body); err != nil {
					t.Fatal(err)
				}
				txn = body.Transaction
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sale on %s never answered after the stall: %v %+v", d, err, resp)
			}
			time.Sleep(100 * time.Millisecond) // a POS retrying a 503
		}
		terms[d].next(protocol.ActionStartPayment, 5*time.Second, forTxn(txn.ID))
	}
}

// TestAStallKeepsConnectionsUpAndEndpointsAnswering: while Redis is stopped
// for 3 s (ten heartbeats), a terminal that sends a frame is not taken for
// stale, /healthz stays 200, /readyz turns 503 within 2 s and back after,
// a POS can connect, and the ops list and /metrics answer quickly.
func TestAStallKeepsConnectionsUpAndEndpointsAnswering(t *testing.T) {
	e := newFaultEnv(t)
	pos, term := e.dialPOS("pk1"), e.dialTerminal("T1")
	id := e.inProgress(pos, term, "T1", "stall-alive", nil)

	if err := e.redis.Stall(); err != nil {
		t.Fatal(err)
	}
	stalled := time.Now()
	// A frame the hub cannot commit while Redis is stopped.
	term.send(protocol.ActionPaymentProgress, "pin", protocol.PaymentProgress{TransactionID: id, Stage: "pin_entry"})

	get := func(path string, auth bool) (int, time.Duration) {
		req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer change-me")
		}
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	for {
		code, _ := get("/readyz", false)
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Since(stalled) > 2*time.Second+answerSlack {
			t.Fatalf("/readyz still %d %s after Redis stopped answering, want 503 within 2 s", code, time.Since(stalled))
		}
		time.Sleep(20 * time.Millisecond) // polling an HTTP endpoint
	}
	if code, took := get("/healthz", false); code != http.StatusOK || took > answerSlack {
		t.Errorf("/healthz during the stall: %d after %s", code, took)
	}
	for _, path := range []string{"/v1/ops/terminals", "/metrics"} {
		if code, took := get(path, true); code != http.StatusOK || took > requestTimeout+answerSlack {
			t.Errorf("%s during the stall: %d after %s, want 200 within %s", path, code, took, requestTimeout)
		}
	}
	dialed := time.Now()
	other := e.dialPOS("pk1b")
	if took := time.Since(dialed); took > requestTimeout+answerSlack {
		t.Errorf("a POS upgrade during the stall took %s", took)
	}
	_ = other
	time.Sleep(3*time.Second - time.Since(stalled)) // the outage's length is the scenario
	for _, p := range []*peer{pos, term} {
		select {
		case <-p.done:
			t.Fatalf("a connection was closed during the stall: %v", p.readErr())
		default:
		}
	}
	if err := e.redis.Resume(); err != nil {
		t.Fatal(err)
	}
	kit.Eventually(t, "/readyz 200", func() bool { code, _ := get("/readyz", false); return code == http.StatusOK })
	for _, p := range []*peer{pos, term} {
		select {
		case <-p.done:
			t.Fatalf("a connection was closed by the stall: %v", p.readErr())
		default:
		}
	}
}

// newProxyEnv starts a private Redis behind an in-process toxiproxy and a
// hub that reaches it through the proxy.
func newProxyEnv(t *testing.T) (*faultEnv, *faultproxy.Proxy) {
	t.Helper()
	srv := redisproc.Start(t, redisproc.Options{})
	proxy := faultproxy.Start(t, srv.Addr)
	return hubOn(t, srv, proxy.URL()), proxy
}

// TestLostRepliesAreResolved: Redis executes what it is sent but its
// replies never come back. A sale is answered unavailable within
// request_timeout; once replies flow again the hub finds the sale was
// created, sends its terminal the startPayment, and a retry of the
// reference answers it. (The sale goes over the POS WebSocket: a signed
// REST POST first records its signature, and that would be the reply lost.)
func TestLostRepliesAreResolved(t *testing.T) {
	e, proxy := newProxyEnv(t)
	pos, term := e.dialPOS("pk1"), e.dialTerminal("T1")
	// A first sale, completed: the hub then knows T1 is free and sends the
	// next sale's commit without reading first, so that it is the commit
	// whose reply is lost.
	first := e.inProgress(pos, term, "T1", "before", nil)
	term.send(protocol.ActionPaymentResult, "pr-"+first, approval(first))
	pos.next(protocol.ActionPaymentComplete, 5*time.Second, withStatus(first, protocol.StatusCompleted))
	h := client.NewHTTP(e.opts, "pk1", "sk1")
	proxy.DropReplies()
	start := time.Now()
	pos.send(protocol.ActionPayment, "lost", sale("T1", 900, "lost-reply"))
	reply := pos.next(protocol.ActionError, requestTimeout+answerSlack, func(m client.Message) bool { return strings.Contains(string(m.Raw), `"requestId":"lost"`) })
	if e := reply.Err(); e == nil || e.Code != protocol.CodeUnavailable || time.Since(start) > requestTimeout+answerSlack {
		t.Fatalf("sale while replies are lost: %s after %s, want unavailable within request_timeout", reply.Raw, time.Since(start))
	}
	proxy.Clear()
	sp := term.next(protocol.ActionStartPayment, 10*time.Second, nil)
	var cmd protocol.StartPayment
	if err := sp.Decode(&cmd); err != nil {
		t.Fatal(err)
	}
	kit.Eventually(t, "Redis up", func() bool { return e.App.Health.Up() })
	resp, err := h.Do(kit.Ctx(t), http.MethodPost, "/v1/payments", sale("T1", 900, "lost-reply"), nil)
	var body struct {
		Transaction protocol.Transaction
		Created     bool
	}
	if err != nil || resp.Status != http.StatusOK || resp.Decode(&body) != nil || body.Created || body.Transaction.ID != cmd.TransactionID {
		t.Fatalf("retrying the reference: %v %+v %+v, want 200 created:false for %s", err, resp, body, cmd.TransactionID)
	}
}

// TestSlowRedisIsServedWithinTheTimeout: with 50 ms each way between the
// hub and Redis (new connections need several round trips), a whole
// payment still goes through, every answer in time.
func TestSlowRedisIsServedWithinTheTimeout(t *testing.T) {
	e, proxy := newProxyEnv(t)
	pos, term := e.dialPOS("pk1"), e.dialTerminal("T1")
	proxy.Latency(50*time.Millisecond, 50*time.Millisecond)
	start := time.Now()
	id := e.inProgress(pos, term, "T1", "slow", nil)
	term.send(protocol.ActionPaymentResult, "pr-"+id, approval(id))
	pos.next(protocol.ActionPaymentComplete, 10*time.Second, withStatus(id, protocol.StatusCompleted))
	term.next(protocol.ActionResultAck, 5*time.Second, forTxn(id))
	t.Logf("a payment with 100 ms to Redis and back took %s", time.Since(start))
	if !e.App.Health.Up() {
		t.Fatal("a slow Redis that answers within the probe's timeout was taken for down")
	}
}

// TestConnectionResetsLoseNothing: the connections to Redis are reset as
// soon as they carry anything. The terminal's approval is answered
// unavailable, and once Redis is reachable again the hub applies it: the
// POS gets paymentComplete and the terminal resultAck.
func TestConnectionResetsLoseNothing(t *testing.T) {
	e, proxy := newProxyEnv(t)
	pos, term := e.dialPOS("pk1"), e.dialTerminal("T1")
	id := e.inProgress(pos, term, "T1", "resets", nil)
	proxy.ResetAfter(0)
	term.send(protocol.ActionPaymentResult, "pr-"+id, approval(id))
	term.next(protocol.ActionError, requestTimeout+answerSlack, errorCode(protocol.CodeUnavailable))
	proxy.Clear()
	pos.next(protocol.ActionPaymentComplete, 10*time.Second, withStatus(id, protocol.StatusCompleted))
	term.next(protocol.ActionResultAck, 5*time.Second, forTxn(id))
}

// TestARedisThatComesBackEmptyIsReported: Redis restarted without
// persistence answers again without the hub's data; the hub says so in
// /readyz and /metrics, and serves new payments.
func TestARedisThatComesBackEmptyIsReported(t *testing.T) {
	srv := redisproc.Start(t, redisproc.Options{}) // no AOF: a restart keeps nothing
	e := hubOn(t, srv, srv.URL())
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	var ready struct {
		Status string
		Redis  struct {
			Up         bool
			DataLostAt *time.Time
		}
	}
	kit.Eventually(t, "/readyz reports the data loss", func() bool {
		resp, err := http.Get(e.Srv.URL + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&ready) == nil && ready.Redis.DataLostAt != nil
	})
	if ready.Status != "ready" || !ready.Redis.Up {
		t.Fatalf("/readyz after the loss: %+v, want ready (the hub works on) with redis.dataLostAt", ready)
	}
	req, _ := http.NewRequest(http.MethodGet, e.Srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer change-me")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "termhub_redis_data_losses_total 1") {
		t.Fatalf("/metrics lacks termhub_redis_data_losses_total 1")
	}
	pos, term := e.dialPOS("pk1"), e.dialTerminal("T1")
	e.inProgress(pos, term, "T1", "after-loss", nil)
}
