package protocol

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// reflected is what encoding/json writes for t.
func reflected(t *Transaction) ([]byte, error) { return json.Marshal(t) }

var oddStrings = []string{
	"", "plain", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnew\nline\r", "\b\f\x00\x01\x1f\x7f",
	"caf\u00e9 \u20ac \U0001F600", "\u2028 and \u2029", "bad \xff utf8 \xc3", "\xed\xa0\x80 surrogate",
}

func randomTime(r *rand.Rand) time.Time {
	zones := []*time.Location{time.UTC, time.FixedZone("", 5*3600+30*60), time.FixedZone("X", -7*3600)}
	return time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2))).In(zones[r.IntN(len(zones))])
}

func randomTransaction(r *rand.Rand) *Transaction {
	s := func() string { return oddStrings[r.IntN(len(oddStrings))] }
	t := &Transaction{
		ID: s(), MerchantID: s(), TerminalID: s(), ConnectionID: s(), Type: s(), ParentID: s(), Status: Status(s()),
		AmountMinor: r.Int64() - r.Int64(), Amount: s(), Currency: s(), Reference: s(), CaptureMode: s(), Description: s(),
		PrintReceipt: r.IntN(2) == 1, TimeoutSeconds: r.IntN(1000) - 10, AuthorizedAmountMinor: r.Int64(), RefundedAmountMinor: -r.Int64(),
		AuthCode: s(), ResponseCode: s(), RRN: s(), CardScheme: s(), MaskedPAN: s(), EntryMode: s(),
		ErrorCode: s(), ErrorMessage: s(), CreatedAt: randomTime(r), Version: r.Int64N(100),
	}
	if r.IntN(3) == 0 {
		t.UpdatedAt = randomTime(r) // else the zero time, which encodes too
	}
	if r.IntN(2) == 0 {
		t.Receipts = &Receipts{Customer: s(), Merchant: s()}
	}
	if r.IntN(2) == 0 {
		at := randomTime(r)
		t.CompletedAt = &at
	}
	switch r.IntN(3) {
	case 0: // nil history: null
	case 1:
		t.History = []HistoryEntry{}
	default:
		for range 1 + r.IntN(4) {
			t.History = append(t.History, HistoryEntry{Status: Status(s()), At: randomTime(r), Cause: s(), ErrorCode: s()})
		}
	}
	return t
}

// The hand-written encoder writes exactly what encoding/json writes.
func TestTransactionJSONMatchesEncodingJSON(t *testing.T) {
	// A field added to these types must be added to the encoder (and to
	// randomTransaction).
	for _, c := range []struct {
		typ  reflect.Type
		want int
	}{{reflect.TypeFor[Transaction](), 31}, {reflect.TypeFor[HistoryEntry](), 4}, {reflect.TypeFor[Receipts](), 2},
		{reflect.TypeFor[POSEvent](), 10}, {reflect.TypeFor[Response](), 4}} {
		if n := c.typ.NumField(); n != c.want {
			t.Fatalf("%s has %d fields; the encoder knows %d", c.typ, n, c.want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		txn := randomTransaction(r)
		want, werr := reflected(txn)
		got, gerr := txn.AppendJSON([]byte("kept"))
		if werr != nil || gerr != nil {
			t.Fatalf("case %d: errors %v and %v", i, werr, gerr)
		}
		if !bytes.Equal(got, append([]byte("kept"), want...)) {
			t.Fatalf("case %d:\n got %s\nwant kept%s", i, got, want)
		}
		// In the messages that carry it.
		s := func() string { return oddStrings[r.IntN(len(oddStrings))] }
		ev := POSEvent{Action: s(), TerminalID: s(), TransactionID: s(), Version: r.Int64(), Transaction: txn, Timestamp: randomTime(r)}
		if r.IntN(2) == 0 {
			ev.MessageID, ev.ReasonCode, ev.Reason = s(), s(), s()
			ev.OriginalPaymentResponse = &PaymentResult{TransactionID: s(), Outcome: s(), AuthCode: s()}
		}
		if r.IntN(4) == 0 {
			ev.Transaction = nil
		}
		sameJSON(t, i, ev, ev.AppendJSON)
		created := r.IntN(2) == 0
		resp := Response{Action: s(), RequestID: json.RawMessage(requestIDs[r.IntN(len(requestIDs))]), Transaction: txn, Created: &created}
		if r.IntN(3) == 0 {
			resp.Transaction, resp.Created = nil, nil
		}
		sameJSON(t, i, resp, resp.AppendJSON)
	}
}

// requestIDs are request ids as a client may send them: any JSON value.
var requestIDs = []string{"", `"r-1"`, `42`, `-1.5e3`, `"<tag>&"`, `"caf\u00e9"`, `"\u2028"`, "\"\u2028 raw\"",
	`{ "a" : [1, 2] }`, `null`, `true`, `"sp ace"`}

// sameJSON fails unless appendJSON writes what encoding/json writes for v.
func sameJSON(t *testing.T, i int, v any, appendJSON func([]byte) ([]byte, error)) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := appendJSON(nil)
	if werr != nil || gerr != nil || !bytes.Equal(got, want) {
		t.Fatalf("case %d %T:\n got %s (%v)\nwant %s (%v)", i, v, got, gerr, want, werr)
	}
}

// A time encoding/json refuses is refused too.
func TestTransactionJSONRefusesWhatEncodingJSONRefuses(t *testing.T) {
	txn := &Transaction{CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := reflected(txn); err == nil {
		t.Fatal("encoding/json accepted year 10000")
	}
	if b, err := txn.AppendJSON(nil); err == nil {
		t.Fatalf("encoded year 10000 as %s", b)
	}
}

// FuzzTransactionJSON compares the two encoders on arbitrary strings and
// numbers.
func FuzzTransactionJSON(f *testing.F) {
	for _, s := range oddStrings {
		f.Add(s, s, int64(1250), int64(1700000000), true)
	}
	f.Fuzz(func(t *testing.T, a, b string, n, sec int64, flag bool) {
		at := time.Unix(sec%4e10, n%1e9).UTC()
		txn := &Transaction{ID: a, Description: b, ErrorMessage: a + b, AmountMinor: n, PrintReceipt: flag,
			CreatedAt: at, History: []HistoryEntry{{Status: Status(b), At: at, Cause: a, ErrorCode: b}}}
		if flag {
			txn.Receipts = &Receipts{Customer: a, Merchant: b}
			txn.CompletedAt = &at
		}
		want, werr := reflected(txn)
		got, gerr := txn.AppendJSON(nil)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("errors differ: %v and %v", werr, gerr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}
