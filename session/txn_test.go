package session

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

func TestTxnActiveByStatus(t *testing.T) {
	active := map[protocol.Status]bool{
		protocol.StatusPending: true, protocol.StatusDispatched: true, protocol.StatusInProgress: true,
		protocol.StatusAwaitingSignature: true, protocol.StatusAwaitingReconnect: true,
		protocol.StatusAuthorized: false, protocol.StatusCompleted: false, protocol.StatusDeclined: false,
		protocol.StatusFailed: false, protocol.StatusCancelled: false, protocol.StatusTimedOut: false,
		protocol.StatusSuperseded: false, protocol.StatusVoided: false,
	}
	for s, want := range active {
		tx := &Txn{Transaction: protocol.Transaction{Status: s}}
		if got := tx.Active(); got != want {
			t.Errorf("%s: Active() = %v, want %v", s, got, want)
		}
	}
}

func TestTxnOpenCommandsOrderAndPayload(t *testing.T) {
	tx := inProgressTxn()
	accepted := false
	tx.OpenSignature, tx.OpenCancel, tx.OpenVoid, tx.VoidReason, tx.OpenCapture = &accepted, true, true, "r", 700
	cmds := tx.OpenCommands()
	if got, want := cmdNames(cmds), []string{aStartPayment, "signatureVerified=false", aCancelPayment, aVoidPayment, "capturePayment=700"}; !slices.Equal(got, want) {
		t.Fatalf("OpenCommands() = %v, want %v", got, want)
	}
	sp := cmds[0].(protocol.StartPayment)
	if want := tx.StartPayment(); sp != want {
		t.Errorf("startPayment %+v, want %+v", sp, want)
	}
	if vp := cmds[3].(protocol.TerminalCommand); vp.Reason != "r" || vp.TransactionID != tx.ID {
		t.Errorf("voidPayment %+v", vp)
	}
	for _, c := range cmds[1:] {
		if c.(protocol.TerminalCommand).TransactionID != tx.ID {
			t.Errorf("%+v names another transaction", c)
		}
	}
	if !tx.HasOpenCommands() {
		t.Error("HasOpenCommands() = false")
	}
}

func TestTxnOpenCommandsPerFixture(t *testing.T) {
	want := map[string][]string{
		sPending: {aStartPayment}, sPendingUnsent: {aStartPayment}, sDispatched: {aStartPayment}, sInProgress: {aStartPayment}, sAwaitingSig: {aStartPayment},
		sReconnectDispatched: {aStartPayment}, sReconnectInProgress: {aStartPayment}, sReconnectAwaitingSig: {aStartPayment},
		sAuthorized: {}, sAuthorizedOpenVoid: {aVoidPayment}, sAuthorizedOpenCapture: {"capturePayment=600"}, sCompleted: {}, sCompletedOpenVoid: {aVoidPayment},
		sDeclined: {}, sFailedDisconnected: {aCancelPayment}, sFailedError: {}, sCancelled: {aCancelPayment}, sTimedOut: {aCancelPayment}, sSuperseded: {aCancelPayment},
		sVoided: {}, sVoidedAutoVoid: {aVoidPayment},
	}
	if len(want) != len(tableFixtures) {
		t.Fatalf("%d expectations for %d fixtures", len(want), len(tableFixtures))
	}
	for _, f := range tableFixtures {
		tx := f.mk()
		got := cmdNames(tx.OpenCommands())
		if !slices.Equal(got, want[f.name]) {
			t.Errorf("%s: OpenCommands() = %v, want %v", f.name, got, want[f.name])
		}
		if tx.HasOpenCommands() != (len(got) > 0) {
			t.Errorf("%s: HasOpenCommands() = %v with %v", f.name, tx.HasOpenCommands(), got)
		}
	}
}

func TestTxnDeadlines(t *testing.T) {
	tx := &Txn{}
	if d := tx.Deadlines(); len(d) != 0 {
		t.Fatalf("Deadlines() of a fresh txn = %v", d)
	}
	at := func(n int) time.Time { return fixturesCreatedAt.Add(time.Duration(n) * time.Second) }
	tx.PaymentDeadline, tx.SignatureDeadline = at(1), at(3)
	if got, want := tx.Deadlines(), map[string]time.Time{DeadlinePayment: at(1), DeadlineSignature: at(3)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Deadlines() = %v, want %v", got, want)
	}
	tx.GraceDeadline, tx.CommandDeadline = at(2), at(4)
	for kind, want := range map[string]time.Time{
		DeadlinePayment: at(1), DeadlineGrace: at(2), DeadlineSignature: at(3), DeadlineCommand: at(4), "bogus": {},
	} {
		if got := tx.Deadline(kind); got != want {
			t.Errorf("Deadline(%q) = %v, want %v", kind, got, want)
		}
		if want.IsZero() {
			continue
		}
		if got := tx.Deadlines()[kind]; got != want {
			t.Errorf("Deadlines()[%q] = %v, want %v", kind, got, want)
		}
	}
}

func TestTxnWireIsACopy(t *testing.T) {
	tx := inProgressTxn()
	w := tx.Wire()
	if !reflect.DeepEqual(*w, tx.Transaction) {
		t.Fatalf("Wire() differs from the transaction")
	}
	w.History[0].Cause = "changed"
	w.Status = protocol.StatusVoided
	if tx.History[0].Cause != "created" || tx.Status != protocol.StatusInProgress {
		t.Fatalf("changing the wire copy changed the transaction: %+v", tx.History[0])
	}
	n := len(w.History)
	tx.History = append(tx.History, protocol.HistoryEntry{Status: protocol.StatusCompleted})
	if len(w.History) != n {
		t.Fatalf("appending to the transaction's history changed an earlier wire copy")
	}
}

// Clone is the copy the engine changes: a clone and its original, both
// moved on by the state machine (which appends to the history), never see
// each other's changes, although they start out sharing the entries.
func TestTxnCloneIsIndependent(t *testing.T) {
	orig := inProgressTxn()
	orig.History = append(make([]protocol.HistoryEntry, 0, 16), orig.History...) // room to append in place
	n := len(orig.History)
	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("Clone() differs from the transaction")
	}
	Apply(c, EvResult{Result: resultWith(protocol.OutcomeApproved)}, eventAt, Settings{})
	Apply(orig, EvResult{Result: resultWith(protocol.OutcomeDeclined)}, eventAt, Settings{})
	if len(orig.History) != n+1 || len(c.History) != n+1 {
		t.Fatalf("histories: original %d, clone %d entries, want %d each", len(orig.History), len(c.History), n+1)
	}
	if c.Status != protocol.StatusCompleted || c.History[n].Status != protocol.StatusCompleted {
		t.Errorf("the clone's history was overwritten by its original's: %s, %+v", c.Status, c.History[n])
	}
	if orig.Status != protocol.StatusDeclined || orig.History[n].Status != protocol.StatusDeclined {
		t.Errorf("the original's history was overwritten by its clone's: %s, %+v", orig.Status, orig.History[n])
	}
	if c.CompletedAt == orig.CompletedAt || c.Result == orig.Result {
		t.Errorf("the clone shares pointers with the original")
	}
}

func TestTxnStartPaymentCarriesTheSale(t *testing.T) {
	tx := baseTxn()
	tx.Description, tx.CaptureMode, tx.PrintReceipt = "2 coffees", protocol.CaptureManual, false
	want := protocol.StartPayment{
		Action: protocol.ActionStartPayment, TransactionID: "txn_m1", Type: protocol.TypeSale, AmountMinor: 1000,
		Amount: "10.00", Currency: "USD", Reference: "order-1", CaptureMode: protocol.CaptureManual,
		PrintReceipt: false, Description: "2 coffees",
	}
	if got := tx.StartPayment(); got != want {
		t.Fatalf("StartPayment() = %+v, want %+v", got, want)
	}
}

func TestTxnRefundableMinor(t *testing.T) {
	tx := completedTxn()
	tx.RefundedAmountMinor, tx.ReservedRefundMinor = 250, 100
	if got := tx.RefundableMinor(); got != 650 {
		t.Fatalf("RefundableMinor() = %d, want 650", got)
	}
}
