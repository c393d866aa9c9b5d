package session

import (
	"regexp"
	"testing"

	"github.com/termhub/termhub/protocol"
)

// TestNewTxnIDNoCardNumber: a transaction id never holds what the text
// rules read as a card number (about 1 random draw in 900 would), so a
// client may quote it in any text it sends, and it keeps the form the
// protocol's exemption for hub-issued transactionIds expects.
func TestNewTxnIDNoCardNumber(t *testing.T) {
	form := regexp.MustCompile(`^txn_[0-9a-f]{24}$`)
	seen := map[string]bool{}
	for range 20000 { // about 22 card-like draws expected without the redraw
		id := newTxnID()
		if !form.MatchString(id) {
			t.Fatalf("id %q is not txn_ and 24 lower-case hex digits", id)
		}
		if protocol.ContainsCardNumber(id) || protocol.ContainsCardNumber("paymentResult:"+id) {
			t.Fatalf("id %q holds a card number", id)
		}
		if seen[id] {
			t.Fatalf("id %q drawn twice", id)
		}
		seen[id] = true
	}
}
