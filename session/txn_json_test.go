package session

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

// Txn's encoder writes exactly what encoding/json writes, for every
// optional field set or not, and decodes back to the same value.
func TestTxnJSONMatchesEncodingJSON(t *testing.T) {
	// A field added to Txn must be added to its appendJSON (and set below).
	if n := reflect.TypeFor[Txn]().NumField(); n != 20 {
		t.Fatalf("Txn has %d fields; appendJSON and this test know 20 (the embedded transaction and 19 of its own)", n)
	}
	r := rand.New(rand.NewPCG(3, 4))
	at := func() time.Time { return time.Unix(r.Int64N(4e9), r.Int64N(1e9)).UTC() }
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	for i := range 3000 {
		now := at()
		txn := &Txn{Transaction: protocol.Transaction{ID: "txn_1", Status: protocol.StatusCompleted, CreatedAt: now, UpdatedAt: now,
			History: []protocol.HistoryEntry{{Status: protocol.StatusPending, At: now, Cause: "created <&>"}}},
			APIKeyID: pick("pk1", "", "k\u2028"), Rev: r.Int64N(50)}
		flip := func() bool { return r.IntN(2) == 0 }
		if flip() {
			txn.ResumeStatus = protocol.StatusDispatched
		}
		txn.Acked, txn.OpenCancel, txn.OpenVoid, txn.VoidConfirmed = flip(), flip(), flip(), flip()
		txn.SignatureTimedOut = flip()
		if flip() {
			v := at()
			txn.FirstSentAt = &v
		}
		for _, d := range []*time.Time{&txn.PaymentDeadline, &txn.GraceDeadline, &txn.SignatureDeadline, &txn.CommandDeadline} {
			if flip() {
				*d = at()
			}
		}
		if flip() {
			txn.OpenCapture = r.Int64N(1000) - 500
		}
		if flip() {
			v := flip()
			txn.OpenSignature = &v
		}
		if flip() {
			txn.VoidReason, txn.VoidReasonCode = pick("late", "a \"quoted\" reason"), pick("LATE", "")
		}
		if flip() {
			txn.Result = &protocol.PaymentResult{TransactionID: "txn_1", Outcome: protocol.OutcomeApproved, AuthCode: "A<1>"}
		}
		if flip() {
			txn.ReservedRefundMinor = r.Int64N(1e6)
		}
		want, werr := json.Marshal(txn)
		got, gerr := txn.appendJSON(nil)
		if werr != nil || gerr != nil {
			t.Fatalf("case %d: errors %v and %v", i, werr, gerr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
		var back Txn
		if err := json.Unmarshal(got, &back); err != nil || !reflect.DeepEqual(&back, txn) {
			t.Fatalf("case %d: decoded %+v (%v), want %+v", i, back, err, *txn)
		}
	}
}
