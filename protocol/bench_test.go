package protocol

import "testing"

// Microbenchmarks of the hot paths every payment crosses: decoding the
// POS's payment and the terminal's result, and signing and verifying a
// WebSocket upgrade. `make bench` runs them; `termhub bench` measures the
// whole hub.

var (
	benchPayment = []byte(`{"action":"payment","requestId":"req-1","terminalId":"TERM-001","amountMinor":1250,"currency":"USD","reference":"order-000123"}`)
	benchResult  = []byte(`{"action":"paymentResult","transactionId":"txn_0123456789abcdef01234567","outcome":"approved","authCode":"A1B2C3","responseCode":"00","cardScheme":"visa","maskedPan":"424242******4242","entryMode":"contactless"}`)
)

func BenchmarkDecodePOSPayment(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayment)))
	for b.Loop() {
		in, err := DecodePOS(benchPayment)
		if err != nil || in.Action != ActionPayment {
			b.Fatalf("DecodePOS = %v, %v", in, err)
		}
	}
}

func BenchmarkDecodeTerminalResult(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchResult)))
	for b.Loop() {
		in, err := DecodeTerminal(benchResult)
		if err != nil || in.Action != ActionPaymentResult {
			b.Fatalf("DecodeTerminal = %v, %v", in, err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if Sign("sk_demo", "GET", "/v1/pos/ws", "1700000000", nil) == "" {
			b.Fatal("empty signature")
		}
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	sig := Sign("sk_demo", "GET", "/v1/terminal/ws", "1700000000", nil)
	b.ReportAllocs()
	for b.Loop() {
		if !VerifySignature("sk_demo", "GET", "/v1/terminal/ws", "1700000000", nil, sig) {
			b.Fatal("signature refused")
		}
	}
}
