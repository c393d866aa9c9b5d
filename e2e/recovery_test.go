package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// startCard takes a payment to IN_PROGRESS on term.
func startCard(t *testing.T, term, pos *client.Conn, id string) {
	t.Helper()
	read(t, term, "startPayment")
	send(t, term, "commandReceived", map[string]any{"transactionId": id})
	send(t, term, "paymentProgress", map[string]any{"transactionId": id, "stage": "card_presented"})
	for {
		ev := event(t, read(t, pos, "paymentStatusUpdate"))
		if ev.TransactionID == id && ev.Transaction.Status == protocol.StatusInProgress {
			return
		}
	}
}

func approveWith(t *testing.T, term *client.Conn, id, auth string) {
	t.Helper()
	send(t, term, "paymentResult", map[string]any{"transactionId": id, "outcome": "approved", "authCode": auth,
		"maskedPan": "424242******4242", "rrn": "r-" + auth})
}

// statusOf reads POS messages until one for id reaches want.
func statusOf(t *testing.T, pos *client.Conn, id string, want protocol.Status) protocol.POSEvent {
	t.Helper()
	for {
		m, err := pos.Read(kit.Ctx(t))
		if err != nil {
			t.Fatalf("waiting for %s of %s: %v", want, id, err)
		}
		if m.MessageID() == "" {
			continue
		}
		ev := event(t, m)
		if ev.TransactionID == id && ev.Transaction.Status == want {
			return ev
		}
	}
}

func TestReconnectInsideGraceDeliversCachedResult(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := pay(t, pos, "T1", 2000, "grace-1").Transaction.ID
	startCard(t, term, pos, id)

	_ = term.CloseNow() // the network drops mid-payment
	ev := statusOf(t, pos, id, protocol.StatusAwaitingReconnect)
	if ev.Action != "paymentStatusUpdate" {
		t.Fatalf("AWAITING_RECONNECT told as %s", ev.Action)
	}
	e.Clock.Advance(59 * time.Second)

	term2 := e.terminal("T1")
	if ev := statusOf(t, pos, id, protocol.StatusInProgress); ev.Transaction.Version != 5 {
		t.Fatalf("resumed version %d, want 5 (PENDING, DISPATCHED, IN_PROGRESS, AWAITING_RECONNECT, IN_PROGRESS)", ev.Transaction.Version)
	}
	var sp protocol.StartPayment
	if err := read(t, term2, "startPayment").Decode(&sp); err != nil || sp.TransactionID != id {
		t.Fatalf("open startPayment not re-sent: %+v %v", sp, err)
	}
	approveWith(t, term2, id, "CACHED")
	read(t, term2, "resultAck")
	done := statusOf(t, pos, id, protocol.StatusCompleted)
	if done.Action != "paymentComplete" || done.Transaction.AuthCode != "CACHED" {
		t.Fatalf("paymentComplete = %+v", done)
	}
	// The grace deadline is gone: advancing past it changes nothing.
	e.Clock.Advance(2 * time.Minute)
	got, err := e.App.Engine.Get(kit.Ctx(t), "m1", id)
	if err != nil || got.Status != protocol.StatusCompleted {
		t.Fatalf("after grace: %v %v", got.Status, err)
	}
}

func TestGraceExpiryFailsThenLateApprovalIsVoided(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := pay(t, pos, "T1", 3000, "late-1").Transaction.ID
	startCard(t, term, pos, id)
	_ = term.CloseNow()
	statusOf(t, pos, id, protocol.StatusAwaitingReconnect)

	e.Clock.Advance(60 * time.Second)
	failed := statusOf(t, pos, id, protocol.StatusFailed)
	if failed.Action != "paymentComplete" || failed.Transaction.ErrorCode != "terminal_disconnected" {
		t.Fatalf("grace expiry = %s %+v", failed.Action, failed.Transaction)
	}
	// On a Redis URL the hub is a node: its grace period ends by a claim in
	// Redis (expireShared), a round trip apart from the transaction's
	// failure, which the engine's own deadline commits. Both follow the
	// same Advance; neither waits for the other.
	kit.Eventually(t, "terminal offline after grace", func() bool {
		s, _, _ := e.App.Hub.TerminalLive("T1")
		return s == protocol.TerminalOffline
	})

	// The terminal comes back late with an approval it had cached.
	term2 := e.terminal("T1")
	if m := read(t, term2, "cancelPayment"); m.Raw == nil {
		t.Fatal("open cancelPayment not re-sent")
	}
	approveWith(t, term2, id, "LATE")
	// voidPayment comes before resultAck: a terminal that got the ack has
	// the void too.
	var vp protocol.TerminalCommand
	if err := read(t, term2, "voidPayment").Decode(&vp); err != nil || vp.TransactionID != id {
		t.Fatalf("voidPayment = %+v %v", vp, err)
	}
	if m, err := term2.Read(kit.Ctx(t)); err != nil || m.Action != "resultAck" {
		t.Fatalf("after voidPayment: %q %v, want resultAck", m.Action, err)
	}
	voided := statusOf(t, pos, id, protocol.StatusVoided)
	if voided.Action != "paymentVoided" || voided.ReasonCode != "late_after_grace" ||
		voided.Reason != "Terminal reconnected after grace period expired" ||
		voided.OriginalPaymentResponse == nil || voided.OriginalPaymentResponse.AuthCode != "LATE" ||
		voided.TerminalID != "T1" || voided.Version != voided.Transaction.Version {
		t.Fatalf("paymentVoided = %+v", voided)
	}
	// The terminal confirms; the void command is closed and not re-sent.
	send(t, term2, "voidResult", map[string]any{"transactionId": id, "ok": true})
	kit.Eventually(t, "no open command left for T1", func() bool {
		n, _ := e.Redis.Client.SCard(kit.Ctx(t), e.Redis.Prefix+"open:{m1}:T1").Result()
		return n == 0
	})
}

func TestPOSGetsMissedResultsInOrderAndAckStopsReplay(t *testing.T) {
	e := newEnv(t)
	t1, t2 := e.terminal("T1"), e.terminal("T2")
	rest := e.http("pk1")
	var ids []string
	for i, term := range []*client.Conn{t1, t2, t1} {
		resp, err := rest.Do(kit.Ctx(t), "POST", "/v1/payments", map[string]any{
			"terminalId": map[int]string{0: "T1", 1: "T2", 2: "T1"}[i], "amount": "1.0" + string(rune('1'+i)), "currency": "USD", "reference": "missed-" + string(rune('a'+i)),
		}, nil)
		if err != nil || resp.Status != http.StatusCreated {
			t.Fatalf("create %d: %v %v", i, resp, err)
		}
		var out struct{ Transaction protocol.Transaction }
		_ = resp.Decode(&out)
		id := out.Transaction.ID
		ids = append(ids, id)
		read(t, term, "startPayment")
		send(t, term, "commandReceived", map[string]any{"transactionId": id})
		approveWith(t, term, id, "M"+string(rune('1'+i)))
		read(t, term, "resultAck")
		kit.Eventually(t, "sale completed", func() bool {
			got, _ := e.App.Engine.Get(kit.Ctx(t), "m1", id)
			return got != nil && got.Status == protocol.StatusCompleted
		})
	}

	// The POS was away for all three; it connects and gets them replayed.
	pos := e.pos("pk1")
	var seen []protocol.POSEvent
	lastID := ""
	for len(seen) < 6 { // DISPATCHED + COMPLETED for each
		m, err := pos.Read(kit.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if m.MessageID() == "" {
			continue
		}
		if lastID != "" && queue.CompareIDs(m.MessageID(), lastID) <= 0 {
			t.Fatalf("replay out of order: %s after %s", m.MessageID(), lastID)
		}
		lastID = m.MessageID()
		seen = append(seen, event(t, m))
	}
	var completes []string
	for _, ev := range seen {
		if ev.Action == "paymentComplete" {
			completes = append(completes, ev.TransactionID)
		}
	}
	if len(completes) != 3 || completes[0] != ids[0] || completes[1] != ids[1] || completes[2] != ids[2] {
		t.Fatalf("paymentComplete order = %v, want %v", completes, ids)
	}

	// Not acked: a new connection gets them all again.
	pos2 := e.pos("pk1")
	first := event(t, read(t, pos2, "paymentStatusUpdate"))
	if first.MessageID != seen[0].MessageID {
		t.Fatalf("replay after reconnect starts at %s, want %s", first.MessageID, seen[0].MessageID)
	}
	if err := pos2.Ack(kit.Ctx(t), lastID); err != nil {
		t.Fatal(err)
	}
	send(t, pos2, "listTerminals", map[string]any{"requestId": "sync"})
	read(t, pos2, "terminals") // the ack was processed before this reply

	// Acked: nothing is replayed any more.
	pos3 := e.pos("pk1")
	send(t, pos3, "listTerminals", map[string]any{"requestId": "after-ack"})
	m, err := pos3.Read(kit.Ctx(t))
	if err != nil || m.Action != "terminals" {
		t.Fatalf("after ack the first message is %q (%v), want the terminals reply", m.Action, err)
	}
	// An ack beyond anything sent is refused and moves nothing.
	send(t, pos3, "ack", map[string]any{"messageId": "99999999999999-0", "requestId": "bad-ack"})
	r, perr := reply(t, pos3, "ack")
	if perr == nil || perr.Code != protocol.CodeInvalidRequest || perr.Field != "messageId" {
		t.Fatalf("ack of an unknown id: %+v %+v", r, perr)
	}
}

func TestHTTPEventSessionPollAndAck(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	rest := e.http("pk1")

	resp, err := rest.Do(kit.Ctx(t), "GET", "/v1/events", nil, nil)
	if err != nil || resp.Status != 400 || resp.Err().Field != protocol.HeaderSession {
		t.Fatalf("events without a session: %v %v", resp, err)
	}
	resp, err = rest.Do(kit.Ctx(t), "POST", "/v1/sessions", nil, nil)
	var sess struct{ SessionID string }
	if err != nil || resp.Status != 201 || resp.Decode(&sess) != nil || sess.SessionID == "" {
		t.Fatalf("open session: %v %v", resp, err)
	}
	hdr := http.Header{protocol.HeaderSession: {sess.SessionID}}

	resp, _ = rest.Do(kit.Ctx(t), "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 700, "currency": "EUR", "reference": "http-1"}, nil)
	var created struct{ Transaction protocol.Transaction }
	_ = resp.Decode(&created)
	id := created.Transaction.ID
	read(t, term, "startPayment")
	send(t, term, "commandReceived", map[string]any{"transactionId": id})
	approveWith(t, term, id, "H1")
	read(t, term, "resultAck")

	var page struct {
		Data       []protocol.POSEvent
		NextCursor string
	}
	kit.Eventually(t, "two events to poll", func() bool {
		resp, err := rest.Do(kit.Ctx(t), "GET", "/v1/events", nil, hdr)
		if err != nil || resp.Status != 200 || resp.Decode(&page) != nil {
			t.Fatalf("poll: %v %v", resp, err)
		}
		return len(page.Data) == 2
	})
	if page.Data[1].Action != "paymentComplete" || page.Data[1].TransactionID != id || page.NextCursor != page.Data[1].MessageID {
		t.Fatalf("events = %+v", page)
	}
	resp, err = rest.Do(kit.Ctx(t), "POST", "/v1/events/ack", map[string]string{"messageId": page.NextCursor}, hdr)
	if err != nil || resp.Status != 204 {
		t.Fatalf("ack: %v %v", resp, err)
	}
	resp, _ = rest.Do(kit.Ctx(t), "GET", "/v1/events", nil, hdr)
	_ = resp.Decode(&page)
	if len(page.Data) != 0 {
		t.Fatalf("after ack: %+v", page.Data)
	}

	// A long poll is woken by the next message.
	resp, _ = rest.Do(kit.Ctx(t), "POST", "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 800, "currency": "EUR", "reference": "http-2"}, nil)
	_ = resp.Decode(&created)
	polled := make(chan []protocol.POSEvent, 1)
	go func() {
		r, err := rest.Do(kit.Ctx(t), "GET", "/v1/events?wait=30s", nil, hdr)
		var p struct{ Data []protocol.POSEvent }
		if err == nil {
			_ = r.Decode(&p)
		}
		polled <- p.Data
	}()
	read(t, term, "startPayment")
	send(t, term, "commandReceived", map[string]any{"transactionId": created.Transaction.ID})
	if got := <-polled; len(got) == 0 || got[0].TransactionID != created.Transaction.ID {
		t.Fatalf("long poll woke with %+v", got)
	}

	// A WebSocket of the same key displaces the session.
	e.pos("pk1")
	resp, _ = rest.Do(kit.Ctx(t), "GET", "/v1/events", nil, hdr)
	if resp.Status != 409 || resp.Err().Code != protocol.CodeSessionDisplaced {
		t.Fatalf("displaced session: %d %s", resp.Status, resp.Body)
	}
}

// TestGreetingAlwaysComesBeforeReplay reconnects many times over a backlog:
// the first frame must be `connected` every time (the client refuses
// anything else), however the writer interleaves replay and live frames.
func TestGreetingAlwaysComesBeforeReplay(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	rest := e.http("pk1")
	for i := 0; i < 10; i++ {
		resp, err := rest.Do(kit.Ctx(t), "POST", "/v1/payments", map[string]any{
			"terminalId": "T1", "amountMinor": 100 + i, "currency": "USD", "reference": "backlog-" + string(rune('a'+i))}, nil)
		if err != nil || resp.Status != http.StatusCreated {
			t.Fatalf("create: %v %v", resp, err)
		}
		read(t, term, "startPayment")
	}
	for i := 0; i < 40; i++ {
		c := e.pos("pk1") // fails unless the first frame is the greeting
		m, err := c.Read(kit.Ctx(t))
		if err != nil || m.MessageID() == "" {
			t.Fatalf("the frame after the greeting is %q (%v), want a replayed message", m.Action, err)
		}
		_ = c.CloseNow()
	}
}
