package queue

import "testing"

// benchEntry is a paymentComplete as the outbox keeps it (about 1.3 KB).
var benchEntry = Entry{ID: "1795315985785-12", Data: []byte(`{"action":"paymentComplete","terminalId":"TERM-001","transactionId":"txn_0123456789abcdef01234567","version":4,` +
	`"transaction":{"id":"txn_0123456789abcdef01234567","merchantId":"m_demo","terminalId":"TERM-001","connectionId":"conn_0123456789abcdef01234567","type":"sale","parentId":"",` +
	`"status":"COMPLETED","amountMinor":1250,"amount":"12.50","currency":"USD","reference":"order-000123","captureMode":"auto","description":"","printReceipt":true,"timeoutSeconds":180,` +
	`"authorizedAmountMinor":1250,"refundedAmountMinor":0,"authCode":"A1B2C3","responseCode":"00","rrn":"","cardScheme":"visa","maskedPan":"424242******4242","entryMode":"contactless",` +
	`"receipts":null,"errorCode":"","errorMessage":"","createdAt":"2026-11-22T10:00:00.123Z","updatedAt":"2026-11-22T10:00:00.456Z","completedAt":"2026-11-22T10:00:00.456Z","version":4,` +
	`"history":[{"status":"PENDING","at":"2026-11-22T10:00:00.123Z","cause":"created"},{"status":"DISPATCHED","at":"2026-11-22T10:00:00.2Z","cause":"terminal took the command"},` +
	`{"status":"IN_PROGRESS","at":"2026-11-22T10:00:00.3Z","cause":"card presented (card_presented)"},{"status":"COMPLETED","at":"2026-11-22T10:00:00.456Z","cause":"approved"}]},` +
	`"timestamp":"2026-11-22T10:00:00.456Z"}`)}

func BenchmarkEntryFrame(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEntry.Data)))
	for b.Loop() {
		if f := benchEntry.Frame(); len(f) <= len(benchEntry.Data) {
			b.Fatal("short frame")
		}
	}
}
