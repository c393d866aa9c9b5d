package bench

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/client"
)

// The load generator shares the machine with the hub, so it reads frames
// with a byte search instead of a full JSON decode: it only needs a few
// string fields, and both the hub and the floor write compact JSON
// (encoding/json) in which the first occurrence of each field below is the
// one wanted (action and messageId at the top; reference and status first
// inside the transaction object).

// jsonStr returns the string value of the first "key":"…" in b, or "".
// Values with escapes are not expected here (ids, references, statuses).
func jsonStr(b []byte, key string) string {
	var pat [64]byte
	p := append(pat[:0], '"')
	p = append(p, key...)
	p = append(p, '"', ':', '"')
	i := bytes.Index(b, p)
	if i < 0 {
		return ""
	}
	rest := b[i+len(p):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// epoch is the zero of nowNS: every time the bench stores is a monotonic
// offset from it.
var epoch = time.Now()

func nowNS() int64 { return int64(time.Since(epoch)) }

func send(ctx context.Context, c *client.Conn, frame []byte) error {
	return c.SendRaw(ctx, websocket.MessageText, frame)
}

// paymentFrame is the POS payment request; requestId is the reference so
// that an error reply names the payment it refuses.
func paymentFrame(terminal, ref string) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"action":"payment","requestId":"`...)
	b = append(b, ref...)
	b = append(b, `","terminalId":"`...)
	b = append(b, terminal...)
	b = append(b, `","amountMinor":1250,"currency":"USD","reference":"`...)
	b = append(b, ref...)
	return append(b, `"}`...)
}

func ackFrame(messageID string) []byte {
	return []byte(`{"action":"ack","messageId":"` + messageID + `"}`)
}

func commandReceivedFrame(txn string) []byte {
	return []byte(`{"action":"commandReceived","transactionId":"` + txn + `"}`)
}

func approvedFrame(txn string) []byte {
	return []byte(`{"action":"paymentResult","transactionId":"` + txn +
		`","outcome":"approved","authCode":"A1B2C3","responseCode":"00","cardScheme":"visa","maskedPan":"424242******4242","entryMode":"contactless"}`)
}

// refSeq extracts the sequence number from a reference made by
// posDriver.ref ("<prefix>s<seq>"); -1 if it is not one of this driver's.
func refSeq(ref, prefix string) int {
	if len(ref) <= len(prefix) || ref[:len(prefix)] != prefix {
		return -1
	}
	n, err := strconv.Atoi(ref[len(prefix):])
	if err != nil {
		return -1
	}
	return n
}
