package apidocs

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest"
	"github.com/termhub/termhub/internal/apptest/kit"
)

// peer is one live WebSocket of the test. Every frame it reads is validated
// against the schema asyncapi.yaml gives that action on its channel, and
// every frame it sends against the schema of what the hub receives.
type peer struct {
	t    *testing.T
	d    *document
	ch   *channel
	name string
	c    *client.Conn
	seen map[string]int // actions read, for the coverage check
}

func (p *peer) checkFrame(dir string, action string, raw []byte, hubSends bool) {
	p.t.Helper()
	where := p.name + " " + dir + " " + action
	if hubSends && !p.ch.hubSends[action] || !hubSends && !p.ch.hubReceives[action] {
		p.t.Errorf("%s: %s is not documented on channel %s in this direction: %s", asyncAPIFile, where, p.ch.key, raw)
		return
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		p.t.Errorf("%s: not JSON: %v", where, err)
		return
	}
	for _, e := range p.d.validate(where, v, p.ch.messages[action]["payload"]) {
		p.t.Errorf("live frame does not match %s: %s\n  frame: %.400s", asyncAPIFile, e, raw)
	}
}

func (p *peer) check(m client.Message) {
	p.t.Helper()
	p.seen[m.Action]++
	p.checkFrame("got", m.Action, m.Raw, true)
}

// send validates v as a client frame, then sends it.
func (p *peer) send(v map[string]any) {
	p.t.Helper()
	raw, _ := json.Marshal(v)
	p.checkFrame("sent", v["action"].(string), raw, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.c.Send(ctx, v); err != nil {
		p.t.Fatalf("%s: send %s: %v", p.name, v["action"], err)
	}
}

// until reads (and checks) frames until one with action arrives.
func (p *peer) until(action string) map[string]any {
	p.t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := p.c.Read(ctx)
		cancel()
		if err != nil {
			p.t.Fatalf("%s: waiting for %s: %v", p.name, action, err)
		}
		p.check(m)
		if m.Action == action {
			var v map[string]any
			_ = json.Unmarshal(m.Raw, &v)
			return v
		}
	}
}

func txnID(t *testing.T, reply map[string]any) string {
	t.Helper()
	txn, _ := reply["transaction"].(map[string]any)
	id, _ := txn["id"].(string)
	if id == "" {
		t.Fatalf("reply without a transaction id: %v", reply)
	}
	return id
}

// TestLiveFramesMatchSchemas runs the payment flows against a real hub and
// checks every frame of the POS, terminal and ops WebSockets against
// asyncapi.yaml; every message the hub sends is seen at least once.
func TestLiveFramesMatchSchemas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a hub")
	}
	e := startHub(t)
	d := loadDoc(t, asyncAPIFile)
	chans := channels(t, d)
	opts := client.Options{BaseURL: e.Srv.URL, Now: e.Clock.Now}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// The ops feed, read in the background.
	ws, _, err := websocket.Dial(ctx, strings.Replace(e.Srv.URL, "http", "ws", 1)+"/v1/ops/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + kit.OpsToken}}})
	if err != nil {
		t.Fatalf("dial ops feed: %v", err)
	}
	ws.SetReadLimit(8 << 20)
	t.Cleanup(func() { _ = ws.CloseNow() })
	feed := make(chan []byte, 4096)
	go func() {
		defer close(feed)
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			feed <- b
		}
	}()

	dial := func(name, kind, id string) *peer {
		t.Helper()
		var c *client.Conn
		if kind == "pos" {
			c = apptest.DialPOS(t, opts, id, kit.Secrets[id])
		} else {
			c = apptest.DialTerminal(t, opts, id, kit.Secrets[id])
		}
		p := &peer{t: t, d: d, ch: chans[kind], name: name, c: c, seen: map[string]int{}}
		p.check(c.Greeting)
		return p
	}
	merge := func(into map[string]int, peers ...*peer) {
		for _, p := range peers {
			for k, n := range p.seen {
				into[k] += n
			}
		}
	}

	term := dial("terminal T1", "terminal", "T1")
	pos := dial("POS pk1", "pos", "pk1")

	pos.send(map[string]any{"action": "listTerminals", "requestId": "r0"})
	pos.until("terminals")

	// A sale with a signature, approved, then voided.
	reply := pos.until2(map[string]any{"action": "payment", "requestId": "r1", "terminalId": "T1", "amount": "12.50", "currency": "usd", "reference": "order-1", "description": "Table 4"}, "paymentResponse")
	sale := txnID(t, reply)
	term.until("startPayment")
	term.send(map[string]any{"action": "commandReceived", "transactionId": sale})
	pos.until("paymentStatusUpdate")
	term.send(map[string]any{"action": "paymentProgress", "requestId": 3, "transactionId": sale, "stage": "card_presented"})
	pos.until("paymentStatusUpdate")
	term.send(map[string]any{"action": "signatureRequired", "transactionId": sale})
	pos.until("signatureRequired")
	pos.send(map[string]any{"action": "signatureVerification", "requestId": "r2", "transactionId": sale, "accepted": true})
	pos.until("signatureVerificationResponse")
	term.until("signatureVerified")
	term.send(map[string]any{"action": "paymentResult", "requestId": 9, "transactionId": sale, "outcome": "approved",
		"authCode": "A1B2C3", "responseCode": "00", "rrn": "123456789012", "cardScheme": "visa", "maskedPan": "424242******4242",
		"entryMode": "contactless", "receipts": map[string]any{"customer": "C", "merchant": "M"}})
	term.until("resultAck")
	done := pos.until("paymentComplete")
	pos.send(map[string]any{"action": "ack", "messageId": done["messageId"]})
	pos.send(map[string]any{"action": "getTransactionStatus", "requestId": 42, "transactionId": sale})
	pos.until("transactionStatus")
	pos.send(map[string]any{"action": "void", "requestId": "r3", "transactionId": sale, "reason": "customer changed mind"})
	pos.until("voidResponse")
	term.until("voidPayment")
	term.send(map[string]any{"action": "voidResult", "transactionId": sale, "ok": true})
	pos.until("paymentVoided")

	// A manual-capture sale, captured for less, then partly refunded.
	auth := txnID(t, pos.until2(map[string]any{"action": "payment", "requestId": "r4", "terminalId": "T1", "amountMinor": 1000, "currency": "EUR", "reference": "order-2", "captureMode": "manual", "idempotencyKey": "k-2"}, "paymentResponse"))
	term.until("startPayment")
	term.send(map[string]any{"action": "paymentResult", "transactionId": auth, "outcome": "approved", "authCode": "Z9", "entryMode": "emv_chip"})
	term.until("resultAck")
	pos.until("paymentStatusUpdate") // AUTHORIZED
	pos.send(map[string]any{"action": "capture", "requestId": "r5", "transactionId": auth, "amountMinor": 800})
	pos.until("captureResponse")
	term.until("capturePayment")
	term.send(map[string]any{"action": "captureResult", "transactionId": auth, "ok": true, "amountMinor": 800})
	pos.until("paymentComplete")
	refund := txnID(t, pos.until2(map[string]any{"action": "refund", "requestId": "r6", "transactionId": auth, "amount": "3.00", "reference": "rf-1", "reason": "damaged"}, "refundResponse"))
	term.until("startPayment")
	term.send(map[string]any{"action": "paymentResult", "transactionId": refund, "outcome": "approved"})
	term.until("resultAck")
	pos.until("paymentComplete")

	// A sale cancelled before the card.
	gone := txnID(t, pos.until2(map[string]any{"action": "payment", "requestId": "r7", "terminalId": "T1", "amountMinor": 500, "currency": "USD", "reference": "order-3"}, "paymentResponse"))
	term.until("startPayment")
	pos.send(map[string]any{"action": "cancel", "requestId": "r8", "transactionId": gone})
	pos.until("cancelResponse")
	term.until("cancelPayment")
	pos.until("paymentComplete")
	term.send(map[string]any{"action": "paymentResult", "transactionId": gone, "outcome": "cancelled"})
	term.until("resultAck")

	// Refused frames.
	raw := func(p *peer, frame string) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		if err := p.c.SendRaw(wctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	raw(pos, `{"action":"refnd","requestId":"e1"}`)
	pos.until("error")
	raw(term, `{"action":"paymentProgress","requestId":5,"transactionId":"`+sale+`","stage":"bogus"}`)
	term.until("error")

	// Another terminal comes online; the clock moves past a heartbeats tick.
	t2 := dial("terminal T2", "terminal", "T2")
	pos.until("terminalStatusUpdate")
	e.Clock.Advance(6 * time.Second)

	// The same device and the same key connect again (the key three times:
	// a fighting key).
	t1b := dial("terminal T1 again", "terminal", "T1")
	term.until("forceDisconnect")
	pos2 := dial("POS pk1 #2", "pos", "pk1")
	pos.until("forceDisconnect")
	pos3 := dial("POS pk1 #3", "pos", "pk1")
	pos2.until("forceDisconnect")
	pos4 := dial("POS pk1 #4", "pos", "pk1")
	pos3.until("forceDisconnect")

	// The ops feed: read until every documented message has come.
	ops := &peer{t: t, d: d, ch: chans["ops"], name: "ops feed", seen: map[string]int{}}
	missing := func() []string {
		var out []string
		for _, k := range keys(ops.ch.messages) {
			if ops.seen[k] == 0 {
				out = append(out, k)
			}
		}
		return out
	}
	deadline := time.After(5 * time.Second)
	first := true
read:
	for len(missing()) > 0 {
		select {
		case b, ok := <-feed:
			if !ok {
				break read
			}
			var env struct {
				Action string `json:"action"`
			}
			_ = json.Unmarshal(b, &env)
			if first && env.Action != "snapshot" {
				t.Errorf("the ops feed's first frame is %q, want snapshot", env.Action)
			}
			first = false
			ops.seen[env.Action]++
			ops.checkFrame("got", env.Action, b, true)
		case <-deadline:
			break read
		}
	}
	if m := missing(); len(m) > 0 {
		t.Errorf("ops feed: documented messages never seen in the live run: %v (seen %v)", m, ops.seen)
	}

	// Coverage: every message the hub sends on the POS and terminal channels
	// came up in this run, so every one was checked against its schema.
	for _, c := range []struct {
		ch    string
		peers []*peer
	}{
		{"pos", []*peer{pos, pos2, pos3, pos4}},
		{"terminal", []*peer{term, t2, t1b}},
	} {
		seen := map[string]int{}
		merge(seen, c.peers...)
		for _, k := range keys(chans[c.ch].hubSends) {
			if seen[k] == 0 {
				t.Errorf("channel %s: %q is documented as sent by the hub but never came up in the live run", c.ch, k)
			}
		}
	}
}

// until2 sends v and waits for the reply action.
func (p *peer) until2(v map[string]any, reply string) map[string]any {
	p.t.Helper()
	p.send(v)
	return p.until(reply)
}
