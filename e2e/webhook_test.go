package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// Webhooks end to end (docs/webhooks.md): a merchant with a webhook_url gets
// every final state POSTed, signed, retried with backoff and deduplicable by
// id; ops see the deliveries at GET /v1/ops/webhooks.

const (
	whSecret   = "whsec_e2e_0123456789abcdef"
	whOpsToken = "ops-e2e-token"
)

// whConfig is the harness configuration with a webhook_url for m1.
const whConfig = `
grace_period: 60s
payment_timeout: 180s
heartbeat_interval: 24h
signature_timeout: 60s
webhook_retry_base: 5s
ops_token: %q
merchants:
  - id: m1
    name: Shop One
    webhook_url: %q
    webhook_secret: %q
    api_keys:
      - {id: pk1, secret: sk1}
    terminals:
      - {device_id: T1, secret: dt1, label: Front}
`

// whEvent is a webhook the receiver accepted.
type whEvent struct {
	ID        string
	Type      string
	CreatedAt time.Time
	Txn       protocol.Transaction
}

// whReceiver is the merchant's endpoint: it verifies each signature by
// recomputing the HMAC, dedupes by event id, and fails the requests fail
// says to.
type whReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests []string // event id of every request, in order
	badSig   int
	events   map[string]whEvent // accepted, by event id
	dupes    int                // accepted again (at-least-once)
	fail     func(n int, id string) bool
}

func newWHReceiver(t *testing.T) *whReceiver {
	rc := &whReceiver{events: map[string]whEvent{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *whReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ts, v1 string
	for _, p := range strings.Split(r.Header.Get("Termhub-Signature"), ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	mac := hmac.New(sha256.New, []byte(whSecret))
	mac.Write([]byte(ts + "." + string(body)))
	sig, _ := hex.DecodeString(v1)
	var ev struct {
		ID        string    `json:"id"`
		Type      string    `json:"type"`
		CreatedAt time.Time `json:"createdAt"`
		Data      struct {
			Transaction protocol.Transaction `json:"transaction"`
		} `json:"data"`
	}
	err := json.Unmarshal(body, &ev)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests = append(rc.requests, r.Header.Get("Termhub-Event-Id"))
	if _, perr := strconv.ParseInt(ts, 10, 64); perr != nil || !hmac.Equal(sig, mac.Sum(nil)) || err != nil ||
		ev.ID != r.Header.Get("Termhub-Event-Id") || r.Header.Get("Content-Type") != "application/json" {
		rc.badSig++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if rc.fail != nil && rc.fail(len(rc.requests), ev.ID) {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if _, seen := rc.events[ev.ID]; seen {
		rc.dupes++ // dedupe by id: acknowledge, do nothing
	} else {
		rc.events[ev.ID] = whEvent{ID: ev.ID, Type: ev.Type, CreatedAt: ev.CreatedAt, Txn: ev.Data.Transaction}
	}
	w.WriteHeader(http.StatusOK)
}

// event returns the accepted event of type typ about transaction txnID.
func (rc *whReceiver) event(txnID, typ string) (whEvent, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, ev := range rc.events {
		if ev.Txn.ID == txnID && ev.Type == typ {
			return ev, true
		}
	}
	return whEvent{}, false
}

func (rc *whReceiver) requestsFor(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, r := range rc.requests {
		if r == id {
			n++
		}
	}
	return n
}

// newWHEnv starts a hub like newEnv, with m1's webhooks going to rc.
func newWHEnv(t *testing.T, rc *whReceiver) *env {
	t.Helper()
	return envFrom(t, apptest.Start(t, fmt.Sprintf(whConfig, whOpsToken, rc.srv.URL+"/termhub", whSecret)))
}

// whCommand reads the terminal's next command action for transaction id.
func whCommand(t *testing.T, term *client.Conn, action, id string) {
	t.Helper()
	for {
		m := read(t, term, action)
		var c struct{ TransactionID string }
		if err := m.Decode(&c); err != nil {
			t.Fatal(err)
		}
		if c.TransactionID == id {
			return
		}
	}
}

// whResult makes the terminal take transaction id and report outcome.
func whResult(t *testing.T, term *client.Conn, id, outcome string) {
	t.Helper()
	whCommand(t, term, "startPayment", id)
	send(t, term, "commandReceived", map[string]any{"transactionId": id})
	fields := map[string]any{"transactionId": id, "outcome": outcome, "maskedPan": "424242******4242", "cardScheme": "visa", "entryMode": "contactless"}
	if outcome == "approved" {
		fields["authCode"] = "A1"
	}
	send(t, term, "paymentResult", fields)
	whCommand(t, term, "resultAck", id)
}

// whAct sends a POS lifecycle action and returns the transaction it answers.
func whAct(t *testing.T, pos *client.Conn, action string, fields map[string]any) *protocol.Transaction {
	t.Helper()
	send(t, pos, action, fields)
	r, perr := reply(t, pos, action)
	if perr != nil {
		t.Fatalf("%s refused: %v", action, perr)
	}
	return r.Transaction
}

// whOps reads GET /v1/ops/webhooks with token ("" for none).
func whOps(t *testing.T, e *env, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(kit.Ctx(t), http.MethodGet, e.Srv.URL+"/v1/ops/webhooks", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type whOpsBody struct {
	Data []struct {
		MerchantID       string `json:"merchantId"`
		Pending          int    `json:"pending"`
		SucceededLast24h int    `json:"succeededLast24h"`
		Deliveries       []struct {
			EventID        string    `json:"eventId"`
			Type           string    `json:"type"`
			TransactionID  string    `json:"transactionId"`
			Attempts       int       `json:"attempts"`
			LastStatusCode int       `json:"lastStatusCode"`
			NextAttemptAt  time.Time `json:"nextAttemptAt"`
		} `json:"deliveries"`
	} `json:"data"`
}

func TestWebhooksForEveryFinalState(t *testing.T) {
	rc := newWHReceiver(t)
	var firstID string
	rc.fail = func(n int, id string) bool { // the very first request fails
		if n == 1 {
			firstID = id
		}
		return id == firstID && n == 1
	}
	e := newWHEnv(t, rc)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	t0 := e.Clock.Now()

	// payment.completed, first answered 500, retried after webhook_retry_base ±20%.
	sale := pay(t, pos, "T1", 1250, "wh-sale-1").Transaction.ID
	whResult(t, term, sale, "approved")
	var ops whOpsBody
	kit.Eventually(t, "one delivery, attempted once", func() bool {
		code, b := whOps(t, e, whOpsToken)
		ops = whOpsBody{}
		return code == 200 && json.Unmarshal(b, &ops) == nil && len(ops.Data) == 1 && len(ops.Data[0].Deliveries) == 1 &&
			ops.Data[0].Deliveries[0].Attempts == 1
	})
	d := ops.Data[0].Deliveries[0]
	if ops.Data[0].MerchantID != "m1" || ops.Data[0].Pending != 1 || d.Type != "payment.completed" || d.TransactionID != sale ||
		d.LastStatusCode != 500 || d.NextAttemptAt.Before(t0.Add(4*time.Second)) || d.NextAttemptAt.After(t0.Add(6*time.Second)) {
		t.Fatalf("ops view of the failing delivery: %+v", ops)
	}
	if code, b := whOps(t, e, ""); code != 401 || !strings.Contains(string(b), `"code":"unauthorized"`) {
		t.Fatalf("GET /v1/ops/webhooks without the token: %d %s", code, b)
	}
	if code, _ := whOps(t, e, "wrong"); code != 401 {
		t.Fatalf("GET /v1/ops/webhooks with a wrong token: %d", code)
	}
	e.Clock.Advance(4*time.Second - time.Millisecond)
	if _, ok := rc.event(sale, "payment.completed"); ok || rc.requestsFor(d.EventID) != 1 {
		t.Fatal("retried before webhook_retry_base minus jitter")
	}
	e.Clock.Advance(2*time.Second + time.Millisecond) // the retry runs inside Advance
	ev, ok := rc.event(sale, "payment.completed")
	if !ok || ev.ID != d.EventID || rc.requestsFor(d.EventID) != 2 {
		t.Fatalf("not retried with the same id by webhook_retry_base plus jitter (%v, %d requests)", ok, rc.requestsFor(d.EventID))
	}
	if ev.Txn.Status != protocol.StatusCompleted || ev.Txn.MaskedPAN != "424242******4242" || ev.Txn.AuthCode != "A1" || !ev.CreatedAt.Equal(t0) {
		t.Fatalf("payment.completed event: %+v", ev)
	}

	// refund.completed.
	refund := whAct(t, pos, "refund", map[string]any{"transactionId": sale, "amountMinor": 250}).ID
	whResult(t, term, refund, "approved")

	// payment.declined, payment.failed.
	declined := pay(t, pos, "T1", 500, "wh-declined").Transaction.ID
	whResult(t, term, declined, "declined")
	failed := pay(t, pos, "T1", 500, "wh-failed").Transaction.ID
	whResult(t, term, failed, "error")

	// refund.failed: a declined refund.
	sale2 := pay(t, pos, "T1", 800, "wh-sale-2").Transaction.ID
	whResult(t, term, sale2, "approved")
	refund2 := whAct(t, pos, "refund", map[string]any{"transactionId": sale2}).ID
	whResult(t, term, refund2, "declined")

	// payment.voided.
	whAct(t, pos, "void", map[string]any{"transactionId": sale2, "reason": "wrong amount"})
	whCommand(t, term, "voidPayment", sale2)
	send(t, term, "voidResult", map[string]any{"transactionId": sale2, "ok": true})

	// payment.superseded then payment.cancelled.
	superseded := pay(t, pos, "T1", 300, "wh-superseded").Transaction.ID
	cancelled := pay(t, pos, "T1", 300, "wh-cancelled").Transaction.ID
	whAct(t, pos, "cancel", map[string]any{"transactionId": cancelled})

	// payment.timed_out.
	timedOut := pay(t, pos, "T1", 300, "wh-timed-out").Transaction.ID
	whCommand(t, term, "startPayment", timedOut)
	send(t, term, "commandReceived", map[string]any{"transactionId": timedOut})
	kit.Eventually(t, "sale dispatched", func() bool {
		tx, err := e.App.Engine.Get(kit.Ctx(t), "m1", timedOut)
		return err == nil && tx.Status == protocol.StatusDispatched
	})
	e.Clock.Advance(180 * time.Second)

	want := []struct {
		txn, typ string
		status   protocol.Status
	}{
		{sale, "payment.completed", protocol.StatusCompleted},
		{refund, "refund.completed", protocol.StatusCompleted},
		{declined, "payment.declined", protocol.StatusDeclined},
		{failed, "payment.failed", protocol.StatusFailed},
		{sale2, "payment.completed", protocol.StatusCompleted},
		{refund2, "refund.failed", protocol.StatusDeclined},
		{sale2, "payment.voided", protocol.StatusVoided},
		{superseded, "payment.superseded", protocol.StatusSuperseded},
		{cancelled, "payment.cancelled", protocol.StatusCancelled},
		{timedOut, "payment.timed_out", protocol.StatusTimedOut},
	}
	for _, w := range want {
		kit.Eventually(t, "webhook event received", func() bool { _, ok := rc.event(w.txn, w.typ); return ok })
		ev, _ := rc.event(w.txn, w.typ)
		if ev.Txn.Status != w.status || ev.Txn.MerchantID != "m1" || !strings.HasPrefix(ev.ID, "evt_") {
			t.Errorf("%s of %s: %+v", w.typ, w.txn, ev)
		}
	}
	// Everything delivered: nothing pending, every id once, all signed.
	kit.Eventually(t, "nothing pending", func() bool {
		code, b := whOps(t, e, whOpsToken)
		ops = whOpsBody{}
		return code == 200 && json.Unmarshal(b, &ops) == nil && len(ops.Data) == 1 && ops.Data[0].Pending == 0
	})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.badSig != 0 || rc.dupes != 0 || len(rc.events) != len(want) {
		for _, ev := range rc.events {
			t.Logf("%s %s %s %s", ev.Type, ev.Txn.ID, ev.Txn.Status, ev.Txn.Reference)
		}
		t.Fatalf("bad signatures %d, duplicates %d, events %d (want %d)", rc.badSig, rc.dupes, len(rc.events), len(want))
	}
	if ops.Data[0].SucceededLast24h != len(want) {
		t.Fatalf("succeededLast24h = %d, want %d", ops.Data[0].SucceededLast24h, len(want))
	}
	ids := map[string]bool{}
	for _, r := range rc.requests {
		ids[r] = true
	}
	if len(rc.requests) != len(want)+1 || len(ids) != len(want) {
		t.Fatalf("%d requests for %d ids, want %d for %d (one retry)", len(rc.requests), len(ids), len(want)+1, len(want))
	}
}
