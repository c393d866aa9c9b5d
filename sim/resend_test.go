package sim

import (
	"context"
	"fmt"
	"testing"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

func TestSentLogKeepsTheNewest(t *testing.T) {
	var l sentLog
	for i := range keepSent + 10 {
		l.put(sentMsg{requestID: fmt.Sprint("voidResult:txn_", i), body: i})
	}
	l.put(sentMsg{requestID: "voidResult:txn_10", body: "again"}) // sent again: now the newest
	l.put(sentMsg{requestID: "voidResult:txn_new"})
	if n := l.order.Len(); n != keepSent || len(l.byID) != keepSent {
		t.Fatalf("%d entries (%d by id), want %d", n, len(l.byID), keepSent)
	}
	if _, ok := l.get("voidResult:txn_11"); ok {
		t.Error("the oldest entry was kept")
	}
	if m, ok := l.get("voidResult:txn_10"); !ok || m.body != "again" {
		t.Errorf("re-put entry = %+v, %v", m, ok)
	}
	l.forget("voidResult:txn_new")
	if _, ok := l.get("voidResult:txn_new"); ok || l.order.Len() != keepSent-1 {
		t.Error("forget kept the entry")
	}
}

func TestAckForgetsTheCardFlow(t *testing.T) {
	term, err := New(Options{Client: client.Options{BaseURL: "http://127.0.0.1:1"}, DeviceID: "T1", Secret: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Offline, so nothing is written, but the bodies are kept all the same.
	term.send(ctx, protocol.ActionCommandReceived, "txn_1", protocol.CommandReceived{TransactionID: "txn_1"}, "")
	term.send(ctx, protocol.ActionPaymentProgress, "txn_1", protocol.PaymentProgress{TransactionID: "txn_1", Stage: "card_presented"}, "")
	term.send(ctx, protocol.ActionVoidResult, "txn_1", protocol.VoidResult{TransactionID: "txn_1"}, "ok")
	term.payments["txn_1"] = &payment{result: &protocol.PaymentResult{TransactionID: "txn_1"}}
	term.ack("txn_1")
	for action, kept := range map[string]bool{protocol.ActionCommandReceived: false, protocol.ActionPaymentProgress: false, protocol.ActionVoidResult: true} {
		if _, ok := term.sent.get(requestID(action, "txn_1")); ok != kept {
			t.Errorf("%s kept = %v, want %v", action, ok, kept)
		}
	}
}
