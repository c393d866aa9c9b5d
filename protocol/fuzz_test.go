package protocol

import (
	"encoding/json"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
)

var posSeeds = []string{
	`{"action":"payment","terminalId":"TERM-001","amountMinor":1250,"currency":"usd","reference":"order-1"}`,
	`{"action":"payment","terminalId":"T1","amount":"12.50","currency":"USD","reference":"r","captureMode":"manual","timeoutSeconds":30,"requestId":"q1"}`,
	`{"action":"payment","terminalId":"T1","amount":12.5,"currency":"KWD","reference":"r"}`,
	`{"action":"payment","terminalId":"T1","amount":"1.5","currency":"JPY","reference":"r"}`,
	`{"action":"payment","terminalId":"T1","amount":"1","amountMinor":1,"currency":"USD","reference":"r"}`,
	`{"action":"payment","terminalId":"T1","amountMinor":"12","currency":"USD","reference":"r"}`,
	`{"action":"refund","transactionId":"txn_1","amount":"5.00","requestId":7}`,
	`{"action":"cancel","transactionId":"txn_1"}`,
	`{"action":"void","transactionId":"txn_1","reason":"x"}`,
	`{"action":"capture","transactionId":"txn_1","amountMinor":-1}`,
	`{"action":"signatureVerification","transactionId":"txn_1","accepted":true}`,
	`{"action":"getTransactionStatus","transactionId":"txn_1"}`,
	`{"action":"listTerminals"}`,
	`{"action":"ack","messageId":"1-0"}`,
	`{"action":"nope"}`,
	`{"action":1}`,
	`[{"action":"payment"}]`,
	`not json`,
	``,
}

var terminalSeeds = []string{
	`{"action":"commandReceived","transactionId":"txn_1"}`,
	`{"action":"paymentProgress","transactionId":"txn_1","stage":"pin_entry"}`,
	`{"action":"signatureRequired","transactionId":"txn_1"}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","maskedPan":"424242******4242","entryMode":"emv_chip","receipts":{"customer":"c"}}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"approved","maskedPan":"4242424242424242"}`,
	`{"action":"paymentResult","transactionId":"txn_1","outcome":"declined","maskedPan":"****4242","amountMinor":5}`,
	`{"action":"voidResult","transactionId":"txn_1","ok":false,"errorMessage":"no"}`,
	`{"action":"captureResult","transactionId":"txn_1","ok":true,"amountMinor":100}`,
	`{"action":"startPayment"}`,
	`{"requestId":"x"}`,
	`null`,
	`{`,
}

func FuzzDecodePOS(f *testing.F) {
	for _, s := range posSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodePOS(data)
		checkDecoded(t, data, in, err, POSActions)
		if err == nil {
			if p, ok := in.Body.(*PaymentRequest); ok {
				if p.AmountMinor == nil || *p.AmountMinor <= 0 || *p.AmountMinor > maxMinor {
					t.Fatalf("payment amount not resolved: %v", p.AmountMinor)
				}
				if _, known := Exponent(p.Currency); !known {
					t.Fatalf("payment currency %q not normalised", p.Currency)
				}
				if p.Amount != nil {
					t.Fatalf("payment Amount %s left", p.Amount)
				}
				if p.CaptureMode != CaptureAuto && p.CaptureMode != CaptureManual {
					t.Fatalf("captureMode %q", p.CaptureMode)
				}
			}
		}
	})
}

func FuzzDecodeTerminal(f *testing.F) {
	for _, s := range terminalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeTerminal(data)
		checkDecoded(t, data, in, err, TerminalActions)
		if err == nil {
			if r, ok := in.Body.(*PaymentResult); ok && r.MaskedPAN != "" && !MaskedPANOK(r.MaskedPAN) {
				t.Fatalf("maskedPan %q accepted", r.MaskedPAN)
			}
		}
	})
}

// checkDecoded holds for both decoders: no panic (the fuzzer catches that),
// a valid Body on success, a coded *Error or ErrNotJSON on failure.
func checkDecoded(t *testing.T, data []byte, in Inbound, err error, actions []string) {
	t.Helper()
	if err == nil {
		if in.Body == nil {
			t.Fatal("no error and no Body")
		}
		v, ok := in.Body.(Validator)
		if !ok {
			t.Fatalf("Body %T is not a Validator", in.Body)
		}
		if e := v.Validate(); e != nil {
			t.Fatalf("re-validating %T: %v", in.Body, e)
		}
		if !slices.Contains(actions, in.Action) {
			t.Fatalf("action %q accepted", in.Action)
		}
		if !json.Valid(data) {
			t.Fatal("invalid JSON accepted")
		}
		return
	}
	if in.Body != nil {
		t.Fatalf("Body %T set with error %v", in.Body, err)
	}
	if errors.Is(err, ErrNotJSON) {
		if json.Valid(data) {
			t.Fatalf("valid JSON %q reported as not JSON", data)
		}
		return
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is neither ErrNotJSON nor *Error", err, err)
	}
	if pe.Code == "" {
		t.Fatalf("error without code: %+v", pe)
	}
	if pe.Code != CodeInvalidRequest && pe.Code != CodeUnknownAction {
		t.Fatalf("decode error code %q", pe.Code)
	}
	if pe.Message == "" {
		t.Fatalf("error without message: %+v", pe)
	}
	if pe.Field == "maskedPan" && strings.ContainsAny(pe.Message, "0123456789") {
		t.Fatalf("maskedPan error message has digits: %q", pe.Message)
	}
	if in.RequestID != nil && !json.Valid(in.RequestID) {
		t.Fatalf("RequestID %q is not JSON", in.RequestID)
	}
}

func FuzzParseAmount(f *testing.F) {
	seeds := []struct{ s, cur string }{
		{"12.50", "USD"}, {"12.500", "USD"}, {"12.345", "USD"}, {"1500", "JPY"}, {"1.5", "JPY"},
		{"0.001", "KWD"}, {"0.0001", "KWD"}, {"1.2345", "CLF"}, {"0", "USD"}, {"-1", "USD"},
		{"0012.50", "EUR"}, {"45035996273704.96", "USD"}, {"99999999999999999", "JPY"},
		{"1e3", "USD"}, {".5", "USD"}, {"5.", "USD"}, {"1", "XYZ"}, {"", "USD"},
	}
	for _, s := range seeds {
		f.Add(s.s, s.cur)
	}
	f.Fuzz(func(t *testing.T, s, cur string) {
		n, e := ParseAmount(s, cur, "amount")
		if e != nil {
			if n != 0 {
				t.Fatalf("ParseAmount(%q, %q) = %d with error %v", s, cur, n, e)
			}
			if e.Code != CodeInvalidRequest || (e.Field != "amount" && e.Field != "currency") || e.Message == "" {
				t.Fatalf("ParseAmount(%q, %q) error %+v", s, cur, e)
			}
			return
		}
		if n <= 0 || n > maxMinor {
			t.Fatalf("ParseAmount(%q, %q) = %d out of range", s, cur, n)
		}
		exp, ok := Exponent(cur)
		if !ok {
			t.Fatalf("ParseAmount accepted unknown currency %q", cur)
		}
		// Exact oracle: s × 10^exp, in rational arithmetic, is n.
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("ParseAmount(%q) accepted what big.Rat cannot read", s)
		}
		r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(exp)), nil)))
		if !r.IsInt() || r.Num().Int64() != n || !r.Num().IsInt64() {
			t.Fatalf("ParseAmount(%q, %s) = %d, exact value %s", s, cur, n, r.RatString())
		}
		formatted := FormatAmount(n, cur)
		back, e := ParseAmount(formatted, cur, "amount")
		if e != nil || back != n {
			t.Fatalf("round trip %q → %d → %q → %d, %v", s, n, formatted, back, e)
		}
		if FormatAmount(back, cur) != formatted {
			t.Fatalf("FormatAmount not canonical for %d", n)
		}
	})
}
