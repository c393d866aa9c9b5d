package chaos

import (
	"slices"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

// TestCheckNamesEachViolation runs the checks on a made-up run in which
// every kind of violation happens once next to its harmless look-alike, so
// the chaos run's figures can be trusted. It needs no hub and runs always.
func TestCheckNamesEachViolation(t *testing.T) {
	const (
		completed = protocol.StatusCompleted
		failed    = protocol.StatusFailed
		voided    = protocol.StatusVoided
		declined  = protocol.StatusDeclined
	)
	view := hubView{txns: map[string]*protocol.Transaction{}, missing: map[string]bool{"gone": true}}
	s := seen{pos: map[string][]posMessage{}, term: map[string]termTruth{}, refs: map[string]payment{}}
	// txn makes transaction id with final status st (at the hub), made by
	// pk1 with reference "ref-"+id.
	txn := func(id string, st protocol.Status) {
		ref := "ref-" + id
		view.txns[id] = &protocol.Transaction{ID: id, Status: st, Reference: ref}
		s.refs[ref] = payment{reference: ref, key: "pk1", ids: []string{id}}
	}
	tell := func(id, key, action string, st protocol.Status, version int64) {
		s.pos[id] = append(s.pos[id], posMessage{key: key, action: action, txnID: id, status: st, version: version})
	}
	approve := func(id string, voids int) {
		tt := termTruth{results: []termResult{{outcome: protocol.OutcomeApproved}}}
		for range voids {
			tt.voids = append(tt.voids, time.Now())
		}
		s.term[id] = tt
	}

	txn("ok", completed)
	approve("ok", 0)
	tell("ok", "pk1", protocol.ActionPaymentStatusUpdate, protocol.StatusInProgress, 3)
	tell("ok", "pk1", protocol.ActionPaymentComplete, completed, 4)

	txn("untold", completed) // approved, ended COMPLETED, the POS never heard
	approve("untold", 0)
	tell("untold", "pk1", protocol.ActionPaymentStatusUpdate, protocol.StatusInProgress, 3)

	txn("otherkey", declined) // told, but to another key's POS
	tell("otherkey", "pk2", protocol.ActionPaymentComplete, declined, 4)

	txn("voidascomplete", voided) // VOIDED must come as paymentVoided
	tell("voidascomplete", "pk1", protocol.ActionPaymentComplete, voided, 6)

	txn("twofinals", completed) // DECLINED, then COMPLETED
	tell("twofinals", "pk1", protocol.ActionPaymentComplete, declined, 4)
	tell("twofinals", "pk1", protocol.ActionPaymentComplete, completed, 5)

	txn("latevoid", voided) // FAILED, then auto-voided: allowed, and reversed
	approve("latevoid", 1)
	tell("latevoid", "pk1", protocol.ActionPaymentComplete, failed, 5)
	tell("latevoid", "pk1", protocol.ActionPaymentVoided, voided, 6)
	tell("latevoid", "pk1", protocol.ActionPaymentComplete, failed, 5) // a replay

	txn("voidnotsent", voided) // VOIDED, but the terminal never got voidPayment
	approve("voidnotsent", 0)
	tell("voidnotsent", "pk1", protocol.ActionPaymentVoided, voided, 6)

	txn("charged", failed) // approved, ended FAILED, never voided
	approve("charged", 0)
	tell("charged", "pk1", protocol.ActionPaymentComplete, failed, 5)

	txn("running", protocol.StatusInProgress)
	tell("running", "pk1", protocol.ActionPaymentStatusUpdate, protocol.StatusInProgress, 3)

	s.term["gone"] = termTruth{} // the terminal heard of it, the hub says 404

	txn("twin1", declined) // two transactions for one reference
	tell("twin1", "pk1", protocol.ActionPaymentComplete, declined, 4)
	txn("twin2", declined)
	view.txns["twin2"].Reference = "ref-twin1"
	tell("twin2", "pk1", protocol.ActionPaymentComplete, declined, 4)
	delete(s.refs, "ref-twin2")

	s = sortedByVersion(s)
	v := check(view, s)
	for _, c := range []struct {
		name      string
		got, want []string
	}{
		{"lost", v.lost, []string{"otherkey", "untold", "voidascomplete"}},
		{"doubled", v.doubled, []string{"twofinals"}},
		{"stuck", v.stuck, []string{"gone", "running"}},
		{"unvoided", v.unvoided, []string{"charged", "voidnotsent"}},
		{"approvedNotTold", v.approvedNotTold, []string{"untold"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if len(v.duplicates) != 1 || !slices.Equal(v.duplicates["ref-twin1"], []string{"twin1", "twin2"}) {
		t.Errorf("duplicates = %v, want ref-twin1: [twin1 twin2]", v.duplicates)
	}
	if !v.failed() {
		t.Error("failed() = false")
	}
}

// sortedByVersion orders each transaction's POS messages as the ledger's
// snapshot does.
func sortedByVersion(s seen) seen {
	for id, ms := range s.pos {
		slices.SortStableFunc(ms, func(a, b posMessage) int { return int(a.version - b.version) })
		s.pos[id] = ms
	}
	return s
}
