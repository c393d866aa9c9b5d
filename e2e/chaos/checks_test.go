package chaos

import (
	"sort"

	"github.com/termhub/termhub/protocol"
)

// verdict is the outcome of the checks: the offending transaction ids of
// each (and, for duplicates, the references).
type verdict struct {
	all []string // every transaction id, the hub's and the clients'
	// lost: final at the hub, but the POS that made it never received that
	// final as a durable message (paymentVoided for VOIDED).
	lost []string
	// doubled: the POS was told two different finals, other than a change
	// to VOIDED or AUTHORIZED → COMPLETED.
	doubled []string
	// stuck: not final at the hub (or unknown to it).
	stuck []string
	// unvoided: the terminal approved, and the transaction ended neither
	// COMPLETED/AUTHORIZED nor VOIDED with voidPayment received by the
	// terminal: the card was charged and nobody was told.
	unvoided []string
	// approvedNotTold: the terminal approved, the transaction ended
	// COMPLETED/AUTHORIZED, its POS never got that final. Counted in lost,
	// listed apart because it is money the merchant does not know about.
	approvedNotTold []string
	// duplicates: references that made more than one transaction.
	duplicates map[string][]string
}

// settled reports whether the checks that time can still fix pass:
// duplicates never go away, so they are not waited for.
func (v verdict) settled() bool {
	return len(v.lost) == 0 && len(v.doubled) == 0 && len(v.stuck) == 0 && len(v.unvoided) == 0
}

// failed reports whether any of the five checks found something.
func (v verdict) failed() bool { return !v.settled() || len(v.duplicates) > 0 }

// check compares the hub's view with what the clients saw.
func check(view hubView, s seen) verdict {
	v := verdict{duplicates: map[string][]string{}}
	ids := s.txnIDs()
	for id := range view.txns {
		ids[id] = true
	}
	for id := range view.missing {
		ids[id] = true
	}
	for id := range ids {
		v.all = append(v.all, id)
	}
	sort.Strings(v.all)

	for _, id := range v.all {
		txn := view.txns[id]
		msgs := s.pos[id]
		if doubledFinals(msgs) {
			v.doubled = append(v.doubled, id)
		}
		if txn == nil || !txn.Status.Final() {
			v.stuck = append(v.stuck, id)
		}
		lost := false
		if txn != nil && txn.Status.Final() && !told(msgs, keyOf(s, txn), txn.Status) {
			lost = true
			v.lost = append(v.lost, id)
		}
		tt, ok := s.term[id]
		if !ok || !tt.approved() {
			continue
		}
		switch {
		case txn != nil && (txn.Status == protocol.StatusCompleted || txn.Status == protocol.StatusAuthorized):
			if lost {
				v.approvedNotTold = append(v.approvedNotTold, id)
			}
		case txn != nil && txn.Status == protocol.StatusVoided && len(tt.voids) > 0:
		default:
			v.unvoided = append(v.unvoided, id)
		}
	}

	byRef := map[string]map[string]bool{}
	add := func(ref, id string) {
		if byRef[ref] == nil {
			byRef[ref] = map[string]bool{}
		}
		byRef[ref][id] = true
	}
	for id, txn := range view.txns {
		add(txn.Reference, id)
	}
	for ref, p := range s.refs {
		for _, id := range p.ids {
			add(ref, id)
		}
	}
	for ref, set := range byRef {
		if len(set) < 2 {
			continue
		}
		for id := range set {
			v.duplicates[ref] = append(v.duplicates[ref], id)
		}
		sort.Strings(v.duplicates[ref])
	}
	return v
}

// keyOf is the API key that made txn, from its reference ("" if unknown).
func keyOf(s seen, txn *protocol.Transaction) string {
	return s.refs[txn.Reference].key
}

// told reports whether key's POS received final status st as a durable
// message: paymentVoided for VOIDED, paymentComplete for the other finals
// (AUTHORIZED, not final for the POS protocol, comes as
// paymentStatusUpdate). An unknown key accepts any POS.
func told(msgs []posMessage, key string, st protocol.Status) bool {
	for _, m := range msgs {
		if m.status != st || (key != "" && m.key != key) {
			continue
		}
		switch {
		case st == protocol.StatusVoided && m.action == protocol.ActionPaymentVoided,
			st == protocol.StatusAuthorized && m.action == protocol.ActionPaymentStatusUpdate,
			st != protocol.StatusVoided && m.action == protocol.ActionPaymentComplete:
			return true
		}
	}
	return false
}

// doubledFinals reports whether msgs (in version order) told two different
// finals where the contract allows none: a final changes only to VOIDED, or
// from AUTHORIZED to COMPLETED.
func doubledFinals(msgs []posMessage) bool {
	var last protocol.Status
	for _, m := range msgs {
		if !isFinalMessage(m) || m.status == last {
			continue
		}
		if last != "" && m.status != protocol.StatusVoided &&
			(last != protocol.StatusAuthorized || m.status != protocol.StatusCompleted) {
			return true
		}
		last = m.status
	}
	return false
}

// isFinalMessage reports whether m tells the POS a final status.
func isFinalMessage(m posMessage) bool {
	switch m.action {
	case protocol.ActionPaymentComplete, protocol.ActionPaymentVoided:
		return true
	case protocol.ActionPaymentStatusUpdate:
		return m.status == protocol.StatusAuthorized
	}
	return false
}
