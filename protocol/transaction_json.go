package protocol

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// The transaction is encoded for its stored copy, every reply and every
// POS message about it: several times a payment, where encoding/json's
// reflection would be the largest single item of the hub's CPU profile
// (docs/performance.md). The
// encoders below write, byte for byte, what encoding/json writes for a
// Transaction, a POSEvent and a Response (the tests in
// transaction_json_test.go and FuzzTransactionJSON compare them): the same
// field order, the same string escaping (HTML characters, U+2028 and
// U+2029, invalid UTF-8), the same times (RFC 3339 with nanoseconds, an
// error outside years 0–9999), null for a nil pointer or slice.
//
// They are AppendJSON methods, not MarshalJSON: encoding/json re-scans and
// compacts what a MarshalJSON returns, which makes a transaction nested in
// a message slower to encode than by reflection (docs/performance.md).
// Callers on the hot path call them directly.

// AppendJSON appends t's JSON to b.
func (t *Transaction) AppendJSON(b []byte) ([]byte, error) {
	return t.AppendJSONFields(append(b, '{'), true)
}

// AppendJSONFields appends t's fields, comma-separated, to b (which holds
// the object's opening brace and any field before them), and the closing
// brace when closeObject is set, so a type that embeds Transaction can add
// fields of its own after them.
func (t *Transaction) AppendJSONFields(b []byte, closeObject bool) ([]byte, error) {
	var err error
	b = appendKey(b, `"id":`, t.ID)
	b = appendKey(b, `,"merchantId":`, t.MerchantID)
	b = appendKey(b, `,"terminalId":`, t.TerminalID)
	b = appendKey(b, `,"connectionId":`, t.ConnectionID)
	b = appendKey(b, `,"type":`, t.Type)
	b = appendKey(b, `,"parentId":`, t.ParentID)
	b = appendKey(b, `,"status":`, string(t.Status))
	b = strconv.AppendInt(append(b, `,"amountMinor":`...), t.AmountMinor, 10)
	b = appendKey(b, `,"amount":`, t.Amount)
	b = appendKey(b, `,"currency":`, t.Currency)
	b = appendKey(b, `,"reference":`, t.Reference)
	b = appendKey(b, `,"captureMode":`, t.CaptureMode)
	b = appendKey(b, `,"description":`, t.Description)
	b = strconv.AppendBool(append(b, `,"printReceipt":`...), t.PrintReceipt)
	b = strconv.AppendInt(append(b, `,"timeoutSeconds":`...), int64(t.TimeoutSeconds), 10)
	b = strconv.AppendInt(append(b, `,"authorizedAmountMinor":`...), t.AuthorizedAmountMinor, 10)
	b = strconv.AppendInt(append(b, `,"refundedAmountMinor":`...), t.RefundedAmountMinor, 10)
	b = appendKey(b, `,"authCode":`, t.AuthCode)
	b = appendKey(b, `,"responseCode":`, t.ResponseCode)
	b = appendKey(b, `,"rrn":`, t.RRN)
	b = appendKey(b, `,"cardScheme":`, t.CardScheme)
	b = appendKey(b, `,"maskedPan":`, t.MaskedPAN)
	b = appendKey(b, `,"entryMode":`, t.EntryMode)
	b = append(b, `,"receipts":`...)
	if t.Receipts == nil {
		b = append(b, "null"...)
	} else {
		r, err := json.Marshal(t.Receipts)
		if err != nil {
			return nil, err
		}
		b = append(b, r...)
	}
	b = appendKey(b, `,"errorCode":`, t.ErrorCode)
	b = appendKey(b, `,"errorMessage":`, t.ErrorMessage)
	if b, err = AppendJSONTime(append(b, `,"createdAt":`...), t.CreatedAt); err != nil {
		return nil, err
	}
	if b, err = AppendJSONTime(append(b, `,"updatedAt":`...), t.UpdatedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"completedAt":`...)
	if t.CompletedAt == nil {
		b = append(b, "null"...)
	} else if b, err = AppendJSONTime(b, *t.CompletedAt); err != nil {
		return nil, err
	}
	b = strconv.AppendInt(append(b, `,"version":`...), t.Version, 10)
	b = append(b, `,"history":`...)
	if t.History == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range t.History {
			h := &t.History[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = appendKey(append(b, '{'), `"status":`, string(h.Status))
			if b, err = AppendJSONTime(append(b, `,"at":`...), h.At); err != nil {
				return nil, err
			}
			b = appendKey(b, `,"cause":`, h.Cause)
			if h.ErrorCode != "" {
				b = appendKey(b, `,"errorCode":`, h.ErrorCode)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if closeObject {
		b = append(b, '}')
	}
	return b, nil
}

func appendKey(b []byte, key, s string) []byte {
	return AppendJSONString(append(b, key...), s)
}

// AppendJSONTime appends at as encoding/json encodes a time.Time.
func AppendJSONTime(b []byte, at time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := at.AppendText(b)
	if err != nil {
		return nil, fmt.Errorf("Time.MarshalJSON: %w", err)
	}
	return append(b, '"'), nil
}

// AppendJSONString appends s as encoding/json encodes a string, HTML
// escaping included.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// AppendJSON appends e's JSON to b.
func (e POSEvent) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = appendKey(append(b, '{'), `"action":`, e.Action)
	if e.MessageID != "" {
		b = appendKey(b, `,"messageId":`, e.MessageID)
	}
	b = appendKey(b, `,"terminalId":`, e.TerminalID)
	b = appendKey(b, `,"transactionId":`, e.TransactionID)
	b = strconv.AppendInt(append(b, `,"version":`...), e.Version, 10)
	b = append(b, `,"transaction":`...)
	if e.Transaction == nil {
		b = append(b, "null"...)
	} else if b, err = e.Transaction.AppendJSON(b); err != nil {
		return nil, err
	}
	if e.ReasonCode != "" {
		b = appendKey(b, `,"reasonCode":`, e.ReasonCode)
	}
	if e.Reason != "" {
		b = appendKey(b, `,"reason":`, e.Reason)
	}
	if e.OriginalPaymentResponse != nil {
		r, err := json.Marshal(e.OriginalPaymentResponse)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"originalPaymentResponse":`...), r...)
	}
	if b, err = AppendJSONTime(append(b, `,"timestamp":`...), e.Timestamp); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// AppendJSON appends r's JSON to b.
func (r Response) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = appendKey(append(b, '{'), `"action":`, r.Action)
	if len(r.RequestID) > 0 {
		if b, err = appendRaw(append(b, `,"requestId":`...), r.RequestID); err != nil {
			return nil, err
		}
	}
	if r.Transaction != nil {
		if b, err = r.Transaction.AppendJSON(append(b, `,"transaction":`...)); err != nil {
			return nil, err
		}
	}
	if r.Created != nil {
		b = strconv.AppendBool(append(b, `,"created":`...), *r.Created)
	}
	return append(b, '}'), nil
}

// appendRaw appends a json.RawMessage as encoding/json does: compacted,
// with HTML characters escaped. A request id of plain printable characters
// (the usual string or number) is that already.
func appendRaw(b []byte, raw json.RawMessage) ([]byte, error) {
	for _, c := range raw {
		if c <= ' ' || c > '~' || c == '<' || c == '>' || c == '&' || c == '\\' {
			enc, err := json.Marshal(raw)
			if err != nil {
				return nil, err
			}
			return append(b, enc...), nil
		}
	}
	return append(b, raw...), nil
}
