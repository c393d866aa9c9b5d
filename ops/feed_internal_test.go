package ops

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/protocol"
)

// A feed's transactionUpdate is, byte for byte, what encoding/json writes
// for a TransactionUpdate (the dashboard and ops clients parse it as
// such), and it is encoded once however many feeds send it.
func TestTxnFrameMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 4, 19, 0, 0, 123456789, time.UTC)
	for _, tx := range []*protocol.Transaction{
		{},
		{ID: "txn_1", MerchantID: "m1", TerminalID: "T1", Type: "sale", Status: protocol.StatusCompleted,
			AmountMinor: 4250, Amount: "42.50", Currency: "EUR", Reference: `order "7731" <b>`, MaskedPAN: "411111******1111",
			CreatedAt: at, UpdatedAt: at, CompletedAt: &at, Version: 4, Receipts: &protocol.Receipts{Customer: "c\u2028", Merchant: "m"},
			History: []protocol.HistoryEntry{{Status: protocol.StatusPending, At: at, Cause: "created"}}},
	} {
		want, err := json.Marshal(TransactionUpdate{Action: ActionTransactionUpdate, Transaction: tx})
		if err != nil {
			t.Fatal(err)
		}
		f := &txnFrame{t: tx}
		got, err := f.bytes(zerolog.Nop())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("txnFrame encodes\n%s (%v), encoding/json\n%s", got, err, want)
		}
		again, _ := f.bytes(zerolog.Nop())
		if &again[0] != &got[0] {
			t.Fatal("a second feed encoded the update again")
		}
	}
}
