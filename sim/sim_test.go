package sim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/sim"
)

// ---- a real hub (app.New on miniredis with a fake clock) ----

// hubEnv is an App on kit.Config, whose heartbeats are a day apart, so
// that advancing the fake clock past a grace period or a payment timeout
// does not also make every connection stale.
type hubEnv struct {
	t     *testing.T
	app   *app.App
	clock *clock.Fake
	opts  client.Options
}

func newHub(t *testing.T) *hubEnv {
	t.Helper()
	h := apptest.Start(t, kit.Config)
	return &hubEnv{t: t, app: h.App, clock: h.Clock, opts: h.ClientOptions()}
}

// instant is a Sleep that does not wait.
func instant(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// startSim runs a simulated T1 against h until the test ends and waits
// until the hub has it online.
func (h *hubEnv) startSim(tweak func(*sim.Options)) (*sim.Terminal, *recorder) {
	h.t.Helper()
	rec := &recorder{}
	opts := sim.Options{Client: h.opts, DeviceID: "T1", Secret: kit.Secrets["T1"], Sleep: instant, OnEvent: rec.add}
	if tweak != nil {
		tweak(&opts)
	}
	term := runSim(h.t, opts)
	kit.Eventually(h.t, "T1 online", func() bool {
		s, cid, _ := h.app.Hub.TerminalLive("T1")
		return s == protocol.TerminalOnline && cid != "" && cid == term.ConnectionID()
	})
	return term, rec
}

// runSim starts a Terminal; it is stopped (and Run must have returned nil)
// when the test ends.
func runSim(t *testing.T, opts sim.Options) *sim.Terminal {
	t.Helper()
	term, err := sim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- term.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return term
}

// pos connects a POS with API key pk1.
func (h *hubEnv) pos() *client.Conn {
	h.t.Helper()
	return apptest.DialPOS(h.t, h.opts, "pk1", kit.Secrets["pk1"])
}

// pay asks for a sale of minor units on T1 and returns the transaction id.
func pay(t *testing.T, pos *client.Conn, minor int64, ref string) string {
	t.Helper()
	req := protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &minor, Currency: "USD", Reference: ref}
	if err := pos.SendAction(kit.Ctx(t), protocol.ActionPayment, "r1", req); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := pos.Read(kit.Ctx(t))
		if err != nil {
			t.Fatalf("waiting for paymentResponse: %v", err)
		}
		if e := m.Err(); e != nil {
			t.Fatalf("payment refused: %v", e)
		}
		if m.Action == "paymentResponse" {
			var r protocol.Response
			if err := m.Decode(&r); err != nil {
				t.Fatal(err)
			}
			return r.Transaction.ID
		}
	}
}

// until reads POS messages until a durable one about id satisfies ok, acks
// it and returns it.
func until(t *testing.T, pos *client.Conn, id string, ok func(protocol.POSEvent) bool) protocol.POSEvent {
	t.Helper()
	for {
		m, err := pos.Read(kit.Ctx(t))
		if err != nil {
			t.Fatalf("waiting for a message about %s: %v", id, err)
		}
		if m.MessageID() == "" {
			continue
		}
		var ev protocol.POSEvent
		if err := m.Decode(&ev); err != nil {
			t.Fatal(err)
		}
		if ev.TransactionID == id && ok(ev) {
			if err := pos.Ack(kit.Ctx(t), ev.MessageID); err != nil {
				t.Fatal(err)
			}
			return ev
		}
	}
}

func final(action string) func(protocol.POSEvent) bool {
	return func(ev protocol.POSEvent) bool { return ev.Action == action }
}

func status(s protocol.Status) func(protocol.POSEvent) bool {
	return func(ev protocol.POSEvent) bool { return ev.Transaction.Status == s }
}

// recorder keeps a Terminal's events.
type recorder struct {
	mu     sync.Mutex
	events []sim.Event
}

func (r *recorder) add(e sim.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) has(kind sim.EventKind, action, detailPart string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind && e.Action == action && strings.Contains(e.Detail, detailPart) {
			return true
		}
	}
	return false
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		b.WriteString(e.String())
		b.WriteString("\n")
	}
	return b.String()
}

// ---- tests against the real hub ----

func TestApproves(t *testing.T) {
	h := newHub(t)
	term, rec := h.startSim(nil)
	pos := h.pos()

	id := pay(t, pos, 1250, "order-1")
	ev := until(t, pos, id, final(protocol.ActionPaymentComplete))
	tx := ev.Transaction
	if tx.Status != protocol.StatusCompleted || tx.AuthCode != sim.AuthCode(id) || tx.RRN != sim.RRN(id) ||
		tx.ResponseCode != "00" || tx.CardScheme != "visa" || tx.MaskedPAN != "424242******4242" ||
		tx.EntryMode != "contactless" || tx.Receipts == nil || !strings.Contains(tx.Receipts.Customer, "12.50 USD") {
		t.Fatalf("transaction = %+v\nevents:\n%s", tx, rec)
	}
	var path []protocol.Status
	for _, hst := range tx.History {
		path = append(path, hst.Status)
	}
	if fmt.Sprint(path) != "[PENDING DISPATCHED IN_PROGRESS COMPLETED]" {
		t.Fatalf("history = %v", path)
	}
	kit.Eventually(t, "result acknowledged", func() bool { return len(term.Unacked()) == 0 && rec.has(sim.EventReceived, "resultAck", "") })
}

func TestOutcomesByAmount(t *testing.T) {
	for _, tc := range []struct {
		minor        int64
		status       protocol.Status
		responseCode string
		errorCode    string
	}{
		{1205, protocol.StatusDeclined, "05", protocol.TxnErrDeclined},
		{1251, protocol.StatusDeclined, "51", protocol.TxnErrDeclined},
		{1291, protocol.StatusFailed, "91", protocol.TxnErrTerminalError},
		{1200, protocol.StatusCompleted, "00", ""},
	} {
		t.Run(fmt.Sprint(tc.minor), func(t *testing.T) {
			h := newHub(t)
			h.startSim(nil)
			pos := h.pos()
			id := pay(t, pos, tc.minor, "o")
			tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
			if tx.Status != tc.status || tx.ResponseCode != tc.responseCode || tx.ErrorCode != tc.errorCode {
				t.Fatalf("got %s responseCode %q errorCode %q, want %s %q %q", tx.Status, tx.ResponseCode, tx.ErrorCode, tc.status, tc.responseCode, tc.errorCode)
			}
		})
	}
}

func TestRefundApproves(t *testing.T) {
	h := newHub(t)
	h.startSim(nil)
	pos := h.pos()
	id := pay(t, pos, 2000, "sale-1")
	until(t, pos, id, status(protocol.StatusCompleted))

	// 5.05 would decline as a sale; a refund approves whatever its amount.
	minor := int64(505)
	if err := pos.SendAction(kit.Ctx(t), protocol.ActionRefund, "", protocol.RefundRequest{TransactionID: id, AmountMinor: &minor}); err != nil {
		t.Fatal(err)
	}
	m, err := pos.ReadUntil(kit.Ctx(t), "refundResponse")
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.Response
	if err := m.Decode(&r); err != nil || r.Transaction == nil {
		t.Fatalf("refundResponse %s: %v", m.Raw, err)
	}
	tx := until(t, pos, r.Transaction.ID, final(protocol.ActionPaymentComplete)).Transaction
	if tx.Type != protocol.TypeRefund || tx.Status != protocol.StatusCompleted {
		t.Fatalf("refund = %s %s", tx.Type, tx.Status)
	}
}

func TestSignature(t *testing.T) {
	for _, accepted := range []bool{true, false} {
		t.Run(fmt.Sprint("accepted=", accepted), func(t *testing.T) {
			h := newHub(t)
			h.startSim(nil)
			pos := h.pos()
			id := pay(t, pos, 1255, "sig")
			until(t, pos, id, final(protocol.ActionSignatureRequired))
			if err := pos.SendAction(kit.Ctx(t), protocol.ActionSignatureVerification, "", protocol.SignatureVerificationRequest{TransactionID: id, Accepted: &accepted}); err != nil {
				t.Fatal(err)
			}
			tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
			want := protocol.StatusDeclined
			if accepted {
				want = protocol.StatusCompleted
			}
			if tx.Status != want {
				t.Fatalf("status = %s, want %s", tx.Status, want)
			}
			if !accepted && tx.ErrorCode != protocol.TxnErrSignatureDeclined {
				t.Fatalf("errorCode = %q", tx.ErrorCode)
			}
		})
	}
}

func TestUnansweredSignatureDeclines(t *testing.T) {
	h := newHub(t)
	_, rec := h.startSim(nil)
	pos := h.pos()
	id := pay(t, pos, 1255, "sig-timeout")
	until(t, pos, id, final(protocol.ActionSignatureRequired))
	// Payment timeout and signature timeout (see TestLateReturnIsAutoVoided).
	kit.Eventually(t, "signature timer armed", func() bool { return h.app.Engine.ArmedTimers() == 2 })
	h.clock.Advance(61 * time.Second)
	tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
	// The simulator declines with signature_declined as for a refusal; the
	// hub reports the unanswered prompt as signature_timeout.
	if tx.Status != protocol.StatusDeclined || tx.ErrorCode != protocol.TxnErrSignatureTimeout {
		t.Fatalf("transaction = %s %s\nevents:\n%s", tx.Status, tx.ErrorCode, rec)
	}
	if !rec.has(sim.EventReceived, "signatureVerified", "accepted=false") {
		t.Fatalf("events:\n%s", rec)
	}
}

// returnGate is a Sleep that holds the DropAndReturn absence until the test
// releases it, and does not wait otherwise.
type returnGate struct {
	away    time.Duration
	arrived chan struct{}
	release chan struct{}
}

func newReturnGate(away time.Duration) *returnGate {
	return &returnGate{away: away, arrived: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *returnGate) sleep(ctx context.Context, d time.Duration) error {
	if d != g.away {
		return ctx.Err()
	}
	g.arrived <- struct{}{}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestDropMidPaymentResendsCachedApproval(t *testing.T) {
	h := newHub(t)
	gate := newReturnGate(7 * time.Second)
	term, rec := h.startSim(func(o *sim.Options) { o.Sleep = gate.sleep; o.ReturnDelay = gate.away })
	pos := h.pos()

	id := pay(t, pos, 1277, "drop")
	until(t, pos, id, status(protocol.StatusAwaitingReconnect))
	<-gate.arrived // the terminal is away, holding the approval
	if got := term.Unacked(); len(got) != 1 || got[0] != id {
		t.Fatalf("unacked = %v", got)
	}
	if s, _, _ := h.app.Hub.TerminalLive("T1"); s != protocol.TerminalReconnecting {
		t.Fatalf("terminal status = %s", s)
	}
	close(gate.release)

	tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
	if tx.Status != protocol.StatusCompleted || tx.AuthCode != sim.AuthCode(id) {
		t.Fatalf("transaction = %s auth %q\nevents:\n%s", tx.Status, tx.AuthCode, rec)
	}
	kit.Eventually(t, "approval acknowledged", func() bool { return len(term.Unacked()) == 0 })
	if !rec.has(sim.EventSent, "paymentResult", "re-sent") || !rec.has(sim.EventDropped, "", "") {
		t.Fatalf("events:\n%s", rec)
	}
}

func TestLateReturnIsAutoVoided(t *testing.T) {
	h := newHub(t)
	gate := newReturnGate(7 * time.Second)
	_, rec := h.startSim(func(o *sim.Options) { o.Sleep = gate.sleep; o.ReturnDelay = gate.away })
	pos := h.pos()

	id := pay(t, pos, 1277, "late")
	until(t, pos, id, status(protocol.StatusAwaitingReconnect))
	<-gate.arrived
	// The hub arms a deadline's timer just after it tells the POS about the
	// state that set it; advancing the fake clock before that would leave
	// the grace timer waiting for the next Advance. Wait for both timers
	// (payment timeout and grace) to be armed.
	kit.Eventually(t, "grace timer armed", func() bool { return h.app.Engine.ArmedTimers() == 2 })
	h.clock.Advance(61 * time.Second) // the grace period runs out while the terminal is away
	tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
	if tx.Status != protocol.StatusFailed || tx.ErrorCode != protocol.TxnErrTerminalDisconnected {
		t.Fatalf("after grace: %s %s", tx.Status, tx.ErrorCode)
	}
	close(gate.release)

	ev := until(t, pos, id, final(protocol.ActionPaymentVoided))
	if ev.ReasonCode != protocol.VoidLateAfterGrace || ev.OriginalPaymentResponse == nil || ev.OriginalPaymentResponse.Outcome != "approved" {
		t.Fatalf("paymentVoided = %+v", ev)
	}
	kit.Eventually(t, "voidResult sent", func() bool { return rec.has(sim.EventSent, "voidResult", "ok") })
}

func TestNoAnswerTimesOut(t *testing.T) {
	h := newHub(t)
	term, rec := h.startSim(nil)
	pos := h.pos()

	id := pay(t, pos, 1299, "silent")
	kit.Eventually(t, "startPayment ignored", func() bool { return rec.has(sim.EventIgnored, "startPayment", "") })
	h.clock.Advance(181 * time.Second)
	tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
	if tx.Status != protocol.StatusTimedOut || tx.ErrorCode != protocol.TxnErrTerminalUnreachable {
		t.Fatalf("transaction = %s %s", tx.Status, tx.ErrorCode)
	}
	// The hub's cancelPayment is answered and the answer acknowledged.
	kit.Eventually(t, "cancel answered", func() bool {
		return rec.has(sim.EventSent, "paymentResult", "cancelled") && len(term.Unacked()) == 0 && rec.has(sim.EventReceived, "resultAck", "")
	})
}

func TestManualCaptureAndVoid(t *testing.T) {
	h := newHub(t)
	h.startSim(nil)
	pos := h.pos()

	minor := int64(3000)
	if err := pos.SendAction(kit.Ctx(t), protocol.ActionPayment, "", protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &minor, Currency: "USD", Reference: "auth-1", CaptureMode: "manual"}); err != nil {
		t.Fatal(err)
	}
	m, err := pos.ReadUntil(kit.Ctx(t), "paymentResponse")
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.Response
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	id := r.Transaction.ID
	until(t, pos, id, status(protocol.StatusAuthorized))

	part := int64(2500)
	if err := pos.SendAction(kit.Ctx(t), protocol.ActionCapture, "", protocol.CaptureRequest{TransactionID: id, AmountMinor: &part}); err != nil {
		t.Fatal(err)
	}
	tx := until(t, pos, id, final(protocol.ActionPaymentComplete)).Transaction
	if tx.Status != protocol.StatusCompleted || tx.AmountMinor != 2500 {
		t.Fatalf("after capture: %s %d", tx.Status, tx.AmountMinor)
	}

	if err := pos.SendAction(kit.Ctx(t), protocol.ActionVoid, "", protocol.VoidRequest{TransactionID: id, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	ev := until(t, pos, id, final(protocol.ActionPaymentVoided))
	if ev.Transaction.Status != protocol.StatusVoided || ev.ReasonCode != protocol.VoidRequested {
		t.Fatalf("paymentVoided = %s %s", ev.Transaction.Status, ev.ReasonCode)
	}
}

func TestWrongSecretStopsRun(t *testing.T) {
	h := newHub(t)
	term, err := sim.New(sim.Options{Client: h.opts, DeviceID: "T1", Secret: "wrong", Sleep: instant})
	if err != nil {
		t.Fatal(err)
	}
	err = term.Run(kit.Ctx(t))
	if !errors.Is(err, sim.ErrUnauthorized) {
		t.Fatalf("Run = %v, want ErrUnauthorized", err)
	}
}

func TestSecondSimulatorDisplacesFirst(t *testing.T) {
	h := newHub(t)
	first, err := sim.New(sim.Options{Client: h.opts, DeviceID: "T1", Secret: kit.Secrets["T1"], Sleep: instant})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Run(context.Background()) }()
	kit.Eventually(t, "first online", func() bool { return first.ConnectionID() != "" })
	h.startSim(nil)
	select {
	case err := <-done:
		if !errors.Is(err, sim.ErrDisplaced) {
			t.Fatalf("first Run = %v, want ErrDisplaced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the displaced simulator keeps running (it would fight for the device)")
	}
}

// ---- a scripted fake hub, for what a real hub does not let a test time ----

// fakeHub accepts terminal WebSockets without checking credentials and hands
// each one to the test.
type fakeHub struct {
	url   string
	conns chan *websocket.Conn
}

func newFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	f := &fakeHub{conns: make(chan *websocket.Conn, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		f.conns <- ws
		<-ctx.Done() // the test owns the connection
		ws.CloseNow()
	}))
	t.Cleanup(func() { cancel(); srv.Close() })
	f.url = srv.URL
	return f
}

// accept greets the next connection.
func (f *fakeHub) accept(t *testing.T, connID string) *websocket.Conn {
	t.Helper()
	select {
	case ws := <-f.conns:
		write(t, ws, map[string]any{"action": "connected", "connectionId": connID, "deviceId": "T1", "heartbeatInterval": 15})
		// Registered after runSim's cleanup, so it runs first: the
		// simulator's closing handshake then ends at once instead of
		// waiting for a hub that no longer reads.
		t.Cleanup(func() { ws.CloseNow() })
		return ws
	case <-time.After(5 * time.Second):
		t.Fatal("the simulator did not connect")
		return nil
	}
}

func write(t *testing.T, ws *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := ws.Write(kit.Ctx(t), websocket.MessageText, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }

// next reads the next frame and checks its action.
func next(t *testing.T, ws *websocket.Conn, action string) frame {
	t.Helper()
	_, b, err := ws.Read(kit.Ctx(t))
	if err != nil {
		t.Fatalf("waiting for %s: %v", action, err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.str("action") != action {
		t.Fatalf("got %s, want %s", b, action)
	}
	return f
}

func startPayment(id string, minor int64) map[string]any {
	return map[string]any{"action": "startPayment", "transactionId": id, "type": "sale", "amountMinor": minor,
		"amount": protocol.FormatAmount(minor, "USD"), "currency": "USD", "reference": "r-" + id, "captureMode": "auto", "printReceipt": true}
}

func TestUnackedResultResentUntilAcked(t *testing.T) {
	f := newFakeHub(t)
	runSim(t, sim.Options{Client: client.Options{BaseURL: f.url}, DeviceID: "T1", Secret: "x", Sleep: instant})

	ws := f.accept(t, "conn_1")
	write(t, ws, startPayment("txn_1", 1000))
	next(t, ws, "commandReceived")
	if p := next(t, ws, "paymentProgress"); p.str("stage") != "card_presented" {
		t.Fatalf("progress = %v", p)
	}
	res := next(t, ws, "paymentResult")
	if res.str("outcome") != "approved" || res.str("authCode") != sim.AuthCode("txn_1") || res.str("maskedPan") != sim.MaskedPAN {
		t.Fatalf("result = %v", res)
	}
	ws.CloseNow() // lost before the hub could ack

	ws = f.accept(t, "conn_2")
	if again := next(t, ws, "paymentResult"); again.str("transactionId") != "txn_1" || again.str("authCode") != res.str("authCode") {
		t.Fatalf("re-sent result = %v", again)
	}
	// The hub's re-sent startPayment is a repeat: nothing is sent for it, so
	// the next frame is the answer to the capture that follows.
	write(t, ws, startPayment("txn_1", 1000))
	write(t, ws, map[string]any{"action": "capturePayment", "transactionId": "txn_1", "amountMinor": 700})
	if c := next(t, ws, "captureResult"); c["ok"] != true || c["amountMinor"] != float64(700) {
		t.Fatalf("captureResult = %v", c)
	}
	write(t, ws, map[string]any{"action": "resultAck", "transactionId": "txn_1"})
	write(t, ws, map[string]any{"action": "cancelPayment", "transactionId": "txn_1"}) // finished: no-op
	write(t, ws, map[string]any{"action": "voidPayment", "transactionId": "txn_1", "reason": "x"})
	if v := next(t, ws, "voidResult"); v["ok"] != true {
		t.Fatalf("voidResult = %v", v)
	}
	ws.CloseNow()

	// Acknowledged: nothing is re-sent on the next connection.
	ws = f.accept(t, "conn_3")
	write(t, ws, map[string]any{"action": "voidPayment", "transactionId": "txn_1"})
	next(t, ws, "voidResult")
}

func TestResultForUnknownTransactionIsDropped(t *testing.T) {
	f := newFakeHub(t)
	term := runSim(t, sim.Options{Client: client.Options{BaseURL: f.url}, DeviceID: "T1", Secret: "x", Sleep: instant})
	ws := f.accept(t, "conn_1")
	write(t, ws, startPayment("txn_lost", 1000))
	next(t, ws, "commandReceived")
	next(t, ws, "paymentProgress")
	res := next(t, ws, "paymentResult")
	if res.str("requestId") != "paymentResult:txn_lost" {
		t.Fatalf("requestId = %q", res.str("requestId"))
	}
	// A hub that lost its state does not know the transaction: it will
	// never ack, so the terminal must not re-send the result forever.
	write(t, ws, map[string]any{"action": "error", "requestId": res["requestId"], "code": "transaction_not_found", "message": "no such transaction", "field": "transactionId"})
	kit.Eventually(t, "result dropped", func() bool { return len(term.Unacked()) == 0 })
	ws.CloseNow()
	ws = f.accept(t, "conn_2")
	write(t, ws, map[string]any{"action": "voidPayment", "transactionId": "txn_other"})
	next(t, ws, "voidResult")
}

func TestCancelBeforeResult(t *testing.T) {
	f := newFakeHub(t)
	runSim(t, sim.Options{Client: client.Options{BaseURL: f.url}, DeviceID: "T1", Secret: "x", Sleep: instant})
	ws := f.accept(t, "conn_1")

	// A signature payment waits for signatureVerified: cancel it there.
	write(t, ws, startPayment("txn_sig", 1055))
	next(t, ws, "commandReceived")
	next(t, ws, "paymentProgress")
	next(t, ws, "signatureRequired")
	write(t, ws, map[string]any{"action": "cancelPayment", "transactionId": "txn_sig"})
	if r := next(t, ws, "paymentResult"); r.str("outcome") != "cancelled" || r.str("transactionId") != "txn_sig" {
		t.Fatalf("result = %v", r)
	}
	// A late signature answer changes nothing; a repeat startPayment on the
	// same connection is a no-op; an ignored payment is cancelled too, and
	// so is one the terminal never saw.
	write(t, ws, map[string]any{"action": "signatureVerified", "transactionId": "txn_sig", "accepted": true})
	write(t, ws, startPayment("txn_sig", 1055))
	write(t, ws, startPayment("txn_silent", 1099))
	write(t, ws, map[string]any{"action": "cancelPayment", "transactionId": "txn_silent"})
	if r := next(t, ws, "paymentResult"); r.str("outcome") != "cancelled" || r.str("transactionId") != "txn_silent" {
		t.Fatalf("result = %v", r)
	}
	write(t, ws, map[string]any{"action": "cancelPayment", "transactionId": "txn_unknown"})
	if r := next(t, ws, "paymentResult"); r.str("outcome") != "cancelled" || r.str("transactionId") != "txn_unknown" {
		t.Fatalf("result = %v", r)
	}
}

// resendGate is a Sleep for a terminal without card delays whose reconnect
// backoff is at most a millisecond: it holds every longer wait, which is the
// wait before a re-send (just under a second), until the test lets it go.
type resendGate struct {
	arrived chan time.Duration
	release chan struct{}
}

func newResendGate() *resendGate {
	return &resendGate{arrived: make(chan time.Duration, 8), release: make(chan struct{})}
}

func (g *resendGate) sleep(ctx context.Context, d time.Duration) error {
	if d <= time.Millisecond {
		return ctx.Err()
	}
	select {
	case g.arrived <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hold waits until a re-send waits at the gate.
func (g *resendGate) hold(t *testing.T) {
	t.Helper()
	select {
	case d := <-g.arrived:
		if d > time.Second {
			t.Fatalf("re-send wait = %s, want about a second", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no re-send is waiting")
	}
}

// open lets the waiting re-send go.
func (g *resendGate) open(t *testing.T) {
	t.Helper()
	select {
	case g.release <- struct{}{}:
	case <-time.After(5 * time.Second):
		t.Fatal("no re-send is waiting")
	}
}

func (g *resendGate) pass(t *testing.T) { g.hold(t); g.open(t) }

// runGated starts a terminal on f whose re-sends wait at the returned gate.
func runGated(t *testing.T, f *fakeHub) (*sim.Terminal, *recorder, *resendGate) {
	t.Helper()
	gate, rec := newResendGate(), &recorder{}
	term := runSim(t, sim.Options{
		Client: client.Options{BaseURL: f.url}, DeviceID: "T1", Secret: "x",
		CardDelay: -1, ReconnectDelay: time.Millisecond, MaxReconnectDelay: time.Millisecond,
		Sleep: gate.sleep, OnEvent: rec.add,
	})
	return term, rec, gate
}

// answer writes the hub's error reply with code to frame m.
func answer(t *testing.T, ws *websocket.Conn, m frame, code string) {
	t.Helper()
	write(t, ws, map[string]any{"action": "error", "requestId": m["requestId"], "code": code, "message": "answered " + code})
}

// same reads the next frame and checks that it repeats want exactly.
func same(t *testing.T, ws *websocket.Conn, want frame) {
	t.Helper()
	if got := next(t, ws, want.str("action")); !reflect.DeepEqual(got, want) {
		t.Fatalf("re-sent %v, want %v", got, want)
	}
}

func TestUnavailableAnswerIsResent(t *testing.T) {
	f := newFakeHub(t)
	_, rec, gate := runGated(t, f)
	ws := f.accept(t, "conn_1")

	// A signature payment: its card flow then waits for signatureVerified,
	// so every other frame is a re-send.
	write(t, ws, startPayment("txn_1", 1055))
	cr := next(t, ws, "commandReceived")
	pp := next(t, ws, "paymentProgress")
	sr := next(t, ws, "signatureRequired")

	// Once per unavailable: the repeat is answered unavailable too, then
	// (like any message the hub records) not at all.
	answer(t, ws, cr, "unavailable")
	gate.pass(t)
	same(t, ws, cr)
	answer(t, ws, cr, "unavailable")
	gate.pass(t)
	same(t, ws, cr)

	// Another code is an answer that a repeat would not change; it also
	// cancels the re-send its earlier unavailable had scheduled.
	answer(t, ws, pp, "unavailable")
	answer(t, ws, pp, "invalid_state")
	answer(t, ws, sr, "unavailable")
	// The replies are handled in order: once the last is seen, the
	// paymentProgress re-send is cancelled.
	kit.Eventually(t, "replies handled", func() bool { return rec.has(sim.EventError, "signatureRequired", "") })
	gate.pass(t) // the cancelled paymentProgress wait
	gate.pass(t)
	same(t, ws, sr)

	write(t, ws, map[string]any{"action": "signatureVerified", "transactionId": "txn_1", "accepted": true})
	if r := next(t, ws, "paymentResult"); r.str("outcome") != "approved" {
		t.Fatalf("result = %v", r)
	}
	if !rec.has(sim.EventSent, "commandReceived", "re-sent after unavailable") || !rec.has(sim.EventSent, "signatureRequired", "re-sent after unavailable") {
		t.Fatalf("events:\n%s", rec)
	}
}

func TestUnavailableResultResentUntilAcked(t *testing.T) {
	f := newFakeHub(t)
	term, rec, gate := runGated(t, f)
	ws := f.accept(t, "conn_1")

	write(t, ws, startPayment("txn_1", 1000))
	next(t, ws, "commandReceived")
	next(t, ws, "paymentProgress")
	res := next(t, ws, "paymentResult")
	for range 2 { // three frames in all
		answer(t, ws, res, "unavailable")
		gate.pass(t)
		same(t, ws, res)
	}

	// Acknowledged while the next re-send waits: it is not sent.
	answer(t, ws, res, "unavailable")
	gate.hold(t)
	write(t, ws, map[string]any{"action": "resultAck", "transactionId": "txn_1"})
	kit.Eventually(t, "result acknowledged", func() bool { return len(term.Unacked()) == 0 })
	gate.open(t)
	// Re-sends go out one after the other: the voidResult's comes second,
	// so nothing was sent for the acknowledged result if it comes next.
	write(t, ws, map[string]any{"action": "voidPayment", "transactionId": "txn_1"})
	vr := next(t, ws, "voidResult")
	answer(t, ws, vr, "unavailable")
	gate.pass(t)
	same(t, ws, vr)

	// Nor on the next connection.
	ws.CloseNow()
	ws = f.accept(t, "conn_2")
	write(t, ws, map[string]any{"action": "voidPayment", "transactionId": "txn_1"})
	next(t, ws, "voidResult")
	if n := strings.Count(rec.String(), "→ paymentResult txn_1"); n != 3 {
		t.Fatalf("paymentResult sent %d times, want 3\nevents:\n%s", n, rec)
	}
}

func TestUnavailableResultWaitsForReconnectWhenOffline(t *testing.T) {
	f := newFakeHub(t)
	term, rec, gate := runGated(t, f)
	ws := f.accept(t, "conn_1")

	write(t, ws, startPayment("txn_1", 1000))
	next(t, ws, "commandReceived")
	next(t, ws, "paymentProgress")
	res := next(t, ws, "paymentResult")
	answer(t, ws, res, "unavailable")
	gate.hold(t)

	// The connection is lost, and the next one not yet greeted, when the
	// re-send is due: it is skipped, and the result goes out on reconnect.
	ws.CloseNow()
	kit.Eventually(t, "offline", func() bool { return term.ConnectionID() == "" })
	gate.open(t)
	kit.Eventually(t, "re-send skipped", func() bool { return rec.has(sim.EventError, "paymentResult", "not re-sent after unavailable: offline") })
	ws = f.accept(t, "conn_2")
	same(t, ws, res)

	// Answered unavailable on the new connection too, and lost again before
	// the re-send: the reconnect's copy is the only one sent.
	answer(t, ws, res, "unavailable")
	gate.hold(t)
	ws.CloseNow()
	ws = f.accept(t, "conn_3")
	same(t, ws, res)
	gate.open(t)
	write(t, ws, map[string]any{"action": "resultAck", "transactionId": "txn_1"})
	// As in TestUnavailableResultResentUntilAcked, a later re-send shows
	// that the skipped one is settled.
	write(t, ws, map[string]any{"action": "capturePayment", "transactionId": "txn_1", "amountMinor": 500})
	c := next(t, ws, "captureResult")
	answer(t, ws, c, "unavailable")
	gate.pass(t)
	same(t, ws, c)
	if rec.has(sim.EventSent, "paymentResult", "re-sent after unavailable") {
		t.Fatalf("re-sent although the reconnect had sent it:\n%s", rec)
	}
}

func TestScriptAndSlowCard(t *testing.T) {
	f := newFakeHub(t)
	var mu sync.Mutex
	var delays []time.Duration
	sleep := func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
		return ctx.Err()
	}
	runSim(t, sim.Options{
		Client: client.Options{BaseURL: f.url}, DeviceID: "T1", Secret: "x", Sleep: sleep,
		CardDelay: 50 * time.Millisecond, SlowCard: true,
		Script: func(sp protocol.StartPayment) sim.Behavior { return sim.InsufficientFunds },
	})
	ws := f.accept(t, "conn_1")
	write(t, ws, startPayment("txn_1", 1000))
	next(t, ws, "commandReceived")
	for _, stage := range []string{"card_presented", "pin_entry", "processing"} {
		if p := next(t, ws, "paymentProgress"); p.str("stage") != stage {
			t.Fatalf("stage = %v, want %s", p, stage)
		}
	}
	r := next(t, ws, "paymentResult")
	if r.str("outcome") != "declined" || r.str("responseCode") != "51" || r["errorCode"] != nil {
		t.Fatalf("result = %v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(delays) != 4 || delays[0] != 500*time.Millisecond {
		t.Fatalf("card delays = %v, want 4 × 500ms", delays)
	}
}

func TestBehaviorForAmount(t *testing.T) {
	for minor, want := range map[int64]sim.Behavior{
		1205: sim.Decline, 5: sim.Decline, 1251: sim.InsufficientFunds, 1291: sim.TerminalError,
		1255: sim.Signature, 1299: sim.NoAnswer, 1277: sim.DropAndReturn, 1250: sim.Approve, 1506: sim.Approve,
	} {
		if got := sim.BehaviorForAmount(minor); got != want {
			t.Errorf("BehaviorForAmount(%d) = %v, want %v", minor, got, want)
		}
	}
	refund := protocol.StartPayment{Type: protocol.TypeRefund, AmountMinor: 1205}
	if got := sim.DefaultScript(refund); got != sim.Approve {
		t.Errorf("refund of 12.05 = %v, want approve", got)
	}
	for b := sim.Approve; b <= sim.DropAndReturn; b++ {
		if got, err := sim.ParseBehavior(b.String()); err != nil || got != b {
			t.Errorf("ParseBehavior(%q) = %v, %v", b, got, err)
		}
	}
	if _, err := sim.ParseBehavior("explode"); err == nil {
		t.Error("ParseBehavior accepted an unknown name")
	}
}

func TestNewChecksOptions(t *testing.T) {
	for _, o := range []sim.Options{
		{DeviceID: "T1", Secret: "s"},
		{Client: client.Options{BaseURL: "http://x"}, Secret: "s"},
		{Client: client.Options{BaseURL: "http://x"}, DeviceID: "T1"},
	} {
		if _, err := sim.New(o); err == nil {
			t.Errorf("New(%+v) accepted incomplete options", o)
		}
	}
}
