package e2e

import (
	"testing"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

func TestPaymentHappyPath(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")

	r := pay(t, pos, "T1", 1250, "order-1")
	if r.Created == nil || !*r.Created || r.Transaction.Status != protocol.StatusPending || r.Transaction.Amount != "12.50" {
		t.Fatalf("paymentResponse = %+v", r)
	}
	id := r.Transaction.ID

	var sp protocol.StartPayment
	if err := read(t, term, "startPayment").Decode(&sp); err != nil || sp.TransactionID != id || sp.AmountMinor != 1250 || sp.Currency != "USD" {
		t.Fatalf("startPayment = %+v (%v)", sp, err)
	}
	send(t, term, "commandReceived", map[string]any{"transactionId": id})
	if ev := event(t, read(t, pos, "paymentStatusUpdate")); ev.Transaction.Status != protocol.StatusDispatched || ev.Version != 2 || ev.MessageID == "" {
		t.Fatalf("update = %+v", ev)
	}
	send(t, term, "paymentProgress", map[string]any{"transactionId": id, "stage": "card_presented"})
	if ev := event(t, read(t, pos, "paymentStatusUpdate")); ev.Transaction.Status != protocol.StatusInProgress || ev.Version != 3 {
		t.Fatalf("update = %+v", ev)
	}
	send(t, term, "paymentResult", map[string]any{"transactionId": id, "outcome": "approved", "authCode": "A1", "maskedPan": "424242******4242", "cardScheme": "visa", "entryMode": "contactless"})
	if m := read(t, term, "resultAck"); m.Action != "resultAck" {
		t.Fatal("no resultAck")
	}
	ev := event(t, read(t, pos, "paymentComplete"))
	if ev.Transaction.Status != protocol.StatusCompleted || ev.Transaction.AuthCode != "A1" || ev.Transaction.MaskedPAN != "424242******4242" || ev.Version != 4 || ev.Transaction.CompletedAt == nil {
		t.Fatalf("paymentComplete = %+v", ev.Transaction)
	}
	if len(ev.Transaction.History) != 4 {
		t.Fatalf("history = %+v", ev.Transaction.History)
	}
	// A repeated result is harmless: acked again, nothing new for the POS.
	send(t, term, "paymentResult", map[string]any{"transactionId": id, "outcome": "approved", "authCode": "A1"})
	read(t, term, "resultAck")

	// The REST query answers from Redis.
	resp, err := e.http("pk1").Do(kit.Ctx(t), "GET", "/v1/transactions/"+id, nil, nil)
	if err != nil || resp.Status != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	var got struct{ Transaction protocol.Transaction }
	if err := resp.Decode(&got); err != nil || got.Transaction.Status != protocol.StatusCompleted || got.Transaction.Version != 4 {
		t.Fatalf("GET transaction = %+v %v", got, err)
	}
}
