package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ErrNotJSON is returned for a frame that is not JSON at all. It is the one
// decoding failure that ends a WebSocket connection (close 4400).
var ErrNotJSON = errors.New("frame is not valid JSON")

// Inbound is a decoded, validated client message.
type Inbound struct {
	Action    string
	RequestID json.RawMessage // echoed verbatim in the reply
	Body      any             // pointer to the request type of Action
}

// Validator is implemented by every inbound request type.
type Validator interface {
	Validate() *Error
}

var posTypes = map[string]func() Validator{
	ActionPayment:               func() Validator { return new(PaymentRequest) },
	ActionCancel:                func() Validator { return new(CancelRequest) },
	ActionRefund:                func() Validator { return new(RefundRequest) },
	ActionVoid:                  func() Validator { return new(VoidRequest) },
	ActionCapture:               func() Validator { return new(CaptureRequest) },
	ActionSignatureVerification: func() Validator { return new(SignatureVerificationRequest) },
	ActionGetTransactionStatus:  func() Validator { return new(GetTransactionStatusRequest) },
	ActionListTerminals:         func() Validator { return new(ListTerminalsRequest) },
	ActionAck:                   func() Validator { return new(AckRequest) },
}

var terminalTypes = map[string]func() Validator{
	ActionCommandReceived:   func() Validator { return new(CommandReceived) },
	ActionPaymentProgress:   func() Validator { return new(PaymentProgress) },
	ActionSignatureRequired: func() Validator { return new(SignatureRequiredEvent) },
	ActionPaymentResult:     func() Validator { return new(PaymentResult) },
	ActionVoidResult:        func() Validator { return new(VoidResult) },
	ActionCaptureResult:     func() Validator { return new(CaptureResult) },
}

// DecodePOS decodes and validates a frame from a POS. The error is ErrNotJSON
// or an *Error to send back; Inbound.RequestID is set whenever it could be read.
func DecodePOS(data []byte) (Inbound, error) { return decode(data, posTypes) }

// DecodeTerminal decodes and validates a frame from a terminal.
func DecodeTerminal(data []byte) (Inbound, error) { return decode(data, terminalTypes) }

type envelope struct {
	Action    json.RawMessage `json:"action"`
	RequestID json.RawMessage `json:"requestId"`
}

// decode decodes a frame. A frame that is not JSON is ErrNotJSON whatever
// else is wrong with it; it is found out only on the way to an error,
// since the decoding of the body (json.Unmarshal) checks the whole frame
// first anyway and the frames that decode are what matters for speed.
func decode(data []byte, types map[string]func() Validator) (Inbound, error) {
	in, err := decodeJSON(data, types)
	if err != nil && !json.Valid(data) {
		return Inbound{}, ErrNotJSON
	}
	return in, err
}

// decodeJSON is decode of a frame that may not be JSON at all: every step
// before the body's json.Unmarshal copes with any bytes, and the walk of
// checkRawText that needs valid JSON checks first.
func decodeJSON(data []byte, types map[string]func() Validator) (Inbound, error) {
	var in Inbound
	// JSON's own whitespace only: bytes.TrimSpace would also take \v, \f
	// and Unicode spaces, which JSON does not allow, and json.Unmarshal of
	// what is left would then accept a frame that is not JSON.
	trimmed := bytes.Trim(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return in, Invalid("", "message must be a JSON object")
	}
	env, ok := scanEnvelope(trimmed)
	if !ok {
		env = envelope{}
		if err := json.Unmarshal(trimmed, &env); err != nil {
			return in, Invalid("", "message must be a JSON object")
		}
	}
	in.RequestID = env.RequestID
	if (!utf8.Valid(trimmed) || maybeSurrogateEscape(trimmed)) && !json.Valid(trimmed) {
		return Inbound{}, ErrNotJSON // checkRawText would walk it
	}
	if e := checkRawText(trimmed); e != nil {
		if head, _, _ := strings.Cut(e.Field, "."); strings.EqualFold(head, "requestId") {
			in.RequestID = nil // not echoed: the reply would not be valid UTF-8
		}
		return in, e
	}
	if e := checkRequestID(env.RequestID); e != nil {
		in.RequestID = nil // not echoed: it is what was refused
		return in, e
	}
	if len(env.Action) == 0 || string(env.Action) == "null" {
		return in, Invalid("action", "is required")
	}
	if in.Action, ok = actionString(env.Action); !ok {
		return in, Invalid("action", "must be a string")
	}
	newBody, ok := types[in.Action]
	if !ok {
		// The unknown action is quoted back only if it is clean text.
		if e := CheckText("action", in.Action, false); e != nil {
			in.Action = ""
			return in, e
		}
		return in, Errorf(CodeUnknownAction, "action", "unknown action %q", truncate(in.Action, 64))
	}
	body := newBody()
	if err := json.Unmarshal(trimmed, body); err != nil {
		return in, jsonFieldError(err)
	}
	if e := body.Validate(); e != nil {
		return in, e
	}
	in.Body = body
	return in, nil
}

// DecodeBody decodes an HTTP request body into v (a request type) and
// validates it, with the same errors as the WebSocket decoders.
func DecodeBody(data []byte, v Validator) *Error {
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}")
	}
	if !json.Valid(data) {
		return Invalid("", "body is not valid JSON")
	}
	if t := bytes.TrimSpace(data); t[0] != '{' {
		return Invalid("", "body must be a JSON object")
	}
	if e := checkRawText(data); e != nil {
		return e
	}
	if err := json.Unmarshal(data, v); err != nil {
		return jsonFieldError(err)
	}
	return v.Validate()
}

func jsonFieldError(err error) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			return Invalid("", "message has the wrong JSON type")
		}
		return Invalid(field, "must be %s", jsonTypeName(te.Type.String()))
	}
	return Invalid("", "message could not be decoded")
}

func jsonTypeName(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "an integer"
	case strings.Contains(goType, "bool"):
		return "a boolean"
	case strings.Contains(goType, "string"):
		return "a string"
	case strings.HasPrefix(goType, "*protocol.") || strings.HasPrefix(goType, "protocol."):
		return "an object"
	}
	return "of another JSON type"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // do not cut a character in two
	}
	return s[:n] + "…"
}

// ---- field checks ----

const (
	maxIDLen   = 128
	maxTextLen = 500
)

// requireID checks an identifier or code the client chose (reference,
// idempotencyKey, authCode, rrn …): required, at most maxIDLen bytes, one
// line of text, and no full card number.
func requireID(field, v string) *Error { return requireIssuedID(field, v, nil) }

// requireIssuedID checks an identifier that names something the hub issued
// or configured (transactionId, messageId, terminalId) as requireID does,
// except that a card-number-like run is let through when issued(v): v has
// exactly the form of an id the hub generates, in which such a run is an
// accident of the clock or of randomness: a stream id's 13-digit
// millisecond part passes the Luhn check 1 time in 10, and 1 random
// "txn_…" or "conn_…" id in about 900 would hold one (the hub draws again
// then, but transactions stored by older versions keep theirs). Such an id
// is only compared with stored ids: one that matches nothing is answered
// not found, and is neither stored nor echoed.
func requireIssuedID(field, v string, issued func(string) bool) *Error {
	switch {
	case v == "":
		return Invalid(field, "is required")
	case len(v) > maxIDLen:
		return Invalid(field, "must be at most %d characters", maxIDLen)
	}
	if e := checkChars(field, v, false); e != nil {
		return e
	}
	if ContainsCardNumber(v) && (issued == nil || !issued(v)) {
		return Invalid(field, msgCardNumber)
	}
	return nil
}

// requireTransactionID checks a transactionId: a card-number-like run is
// let through only in the form the hub issues ("txn_" and 24 hex digits).
func requireTransactionID(v string) *Error {
	return requireIssuedID("transactionId", v, isTransactionID)
}

// requireTerminalID checks a terminalId: a device id of the configuration,
// or (legacy) a connection id; a card-number-like run is let through only
// in the form of a connection id the hub issues ("conn_" and 24 hex
// digits). A device id holding a card number is refused.
func requireTerminalID(v string) *Error { return requireIssuedID("terminalId", v, isConnectionID) }

// requireMessageID checks an ack's messageId: a card-number-like run is let
// through only in the form of the stream ids the hub issues.
func requireMessageID(v string) *Error { return requireIssuedID("messageId", v, isStreamID) }

// isTransactionID reports whether v has the form of the ids the hub gives
// transactions (session.newTxnID): "txn_" and 24 lower-case hex digits.
func isTransactionID(v string) bool { return hexID(v, "txn_") }

// isConnectionID reports whether v has the form of the ids the hub gives
// connections (hub.newConnectionID): "conn_" and 24 lower-case hex digits.
func isConnectionID(v string) bool { return hexID(v, "conn_") }

func hexID(v, prefix string) bool {
	rest, ok := strings.CutPrefix(v, prefix)
	if !ok || len(rest) != 24 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isStreamID reports whether v has the form of the Redis stream ids the hub
// issues as messageIds: "<ms>-<seq>", a millisecond time of at most 13
// digits (until the year 2286) and a sequence number of at most 12. The
// only card-number-like run such an id can hold is its millisecond part.
func isStreamID(v string) bool {
	ms, seq, ok := strings.Cut(v, "-")
	return ok && ms != "" && len(ms) <= 13 && allDigits(ms) && seq != "" && len(seq) <= 12 && allDigits(seq)
}

// CheckID applies the rules of an optional identifier a client chooses
// (such as an Idempotency-Key header): at most 128 bytes of one-line text
// (see CheckText) with no full card number. "" passes.
func CheckID(field, v string) *Error { return optionalID(field, v) }

func optionalID(field, v string) *Error {
	if v == "" {
		return nil
	}
	return requireID(field, v)
}

// optionalText checks a free one-line text (description, reason,
// errorMessage).
func optionalText(field, v string) *Error {
	if len(v) > maxTextLen {
		return Invalid(field, "must be at most %d characters", maxTextLen)
	}
	return CheckText(field, v, false)
}

// maxReceiptLen bounds each receipt text.
const maxReceiptLen = 8192

// checkReceipts checks both receipt texts: line breaks are allowed there.
func checkReceipts(r *Receipts) *Error {
	if r == nil {
		return nil
	}
	if len(r.Customer) > maxReceiptLen || len(r.Merchant) > maxReceiptLen {
		return Invalid("receipts", "each receipt must be at most %d bytes", maxReceiptLen)
	}
	return firstErr(CheckText("receipts.customer", r.Customer, true), CheckText("receipts.merchant", r.Merchant, true))
}

func firstErr(errs ...*Error) *Error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// resolveAmount turns amount/amountMinor (exactly one) into minor units.
func resolveAmount(minor *int64, amount json.RawMessage, currency string, required bool) (int64, *Error) {
	hasAmount := len(amount) > 0 && string(amount) != "null"
	switch {
	case minor != nil && hasAmount:
		return 0, Invalid("amount", "send amountMinor or amount, not both")
	case minor != nil:
		return *minor, CheckMinor(*minor, "amountMinor")
	case hasAmount:
		var s string
		if amount[0] == '"' {
			if err := json.Unmarshal(amount, &s); err != nil {
				return 0, Invalid("amount", "must be a decimal string such as \"12.50\"")
			}
		} else {
			s = string(amount) // a JSON number literal, taken exactly as written
			if strings.ContainsAny(s, "eE") {
				return 0, Invalid("amount", "must be a decimal string such as \"12.50\"")
			}
		}
		return ParseAmount(s, currency, "amount")
	case required:
		return 0, Invalid("amountMinor", "amountMinor or amount is required")
	}
	return 0, nil
}

func checkCurrency(c *string) *Error {
	if *c == "" {
		return Invalid("currency", "is required")
	}
	up := strings.ToUpper(*c)
	if _, ok := Exponent(up); !ok {
		return Invalid("currency", "unknown currency %q (ISO 4217 code expected)", truncate(*c, 8))
	}
	*c = up
	return nil
}

// Validate checks the request and resolves the amount into AmountMinor.
func (r *PaymentRequest) Validate() *Error {
	if e := firstErr(requireTerminalID(r.TerminalID), checkCurrency(&r.Currency)); e != nil {
		return e
	}
	minor, e := resolveAmount(r.AmountMinor, r.Amount, r.Currency, true)
	if e != nil {
		return e
	}
	r.AmountMinor, r.Amount = &minor, nil
	switch r.CaptureMode {
	case "":
		r.CaptureMode = CaptureAuto
	case CaptureAuto, CaptureManual:
	default:
		return Invalid("captureMode", "must be \"auto\" or \"manual\"")
	}
	if r.TimeoutSeconds != nil && (*r.TimeoutSeconds < 10 || *r.TimeoutSeconds > 600) {
		return Invalid("timeoutSeconds", "must be between 10 and 600")
	}
	return firstErr(requireID("reference", r.Reference), optionalText("description", r.Description),
		optionalID("idempotencyKey", r.IdempotencyKey))
}

// Minor returns the validated amount in minor units.
func (r *PaymentRequest) Minor() int64 { return *r.AmountMinor }

// Validate checks the request.
func (r *CancelRequest) Validate() *Error {
	return firstErr(requireTransactionID(r.TransactionID), optionalID("idempotencyKey", r.IdempotencyKey))
}

// Validate checks the request. A refund's amount needs the sale's currency to
// be resolved, so ResolveAmount finishes the job.
func (r *RefundRequest) Validate() *Error {
	if r.AmountMinor != nil && len(r.Amount) > 0 && string(r.Amount) != "null" {
		return Invalid("amount", "send amountMinor or amount, not both")
	}
	if r.AmountMinor != nil {
		if e := CheckMinor(*r.AmountMinor, "amountMinor"); e != nil {
			return e
		}
	}
	return firstErr(requireTransactionID(r.TransactionID), optionalID("reference", r.Reference),
		optionalText("reason", r.Reason), optionalID("idempotencyKey", r.IdempotencyKey))
}

// ResolveAmount returns the refund amount in minor units of currency, or 0
// when none was given (a full refund of what remains).
func (r *RefundRequest) ResolveAmount(currency string) (int64, *Error) {
	return resolveAmount(r.AmountMinor, r.Amount, currency, false)
}

// Validate checks the request.
func (r *VoidRequest) Validate() *Error {
	return firstErr(requireTransactionID(r.TransactionID), optionalText("reason", r.Reason),
		optionalID("idempotencyKey", r.IdempotencyKey))
}

// Validate checks the request.
func (r *CaptureRequest) Validate() *Error {
	if r.AmountMinor != nil {
		if e := CheckMinor(*r.AmountMinor, "amountMinor"); e != nil {
			return e
		}
	}
	return firstErr(requireTransactionID(r.TransactionID), optionalID("idempotencyKey", r.IdempotencyKey))
}

// Validate checks the request.
func (r *SignatureVerificationRequest) Validate() *Error {
	if e := requireTransactionID(r.TransactionID); e != nil {
		return e
	}
	if r.Accepted == nil {
		return Invalid("accepted", "is required (true or false)")
	}
	return optionalID("idempotencyKey", r.IdempotencyKey)
}

// Validate checks the request.
func (r *GetTransactionStatusRequest) Validate() *Error {
	return requireTransactionID(r.TransactionID)
}

// Validate checks the request.
func (r *ListTerminalsRequest) Validate() *Error { return nil }

// Validate checks the request.
func (r *AckRequest) Validate() *Error { return requireMessageID(r.MessageID) }

// Validate checks the message.
func (m *CommandReceived) Validate() *Error { return requireTransactionID(m.TransactionID) }

// Validate checks the message.
func (m *PaymentProgress) Validate() *Error {
	if e := requireTransactionID(m.TransactionID); e != nil {
		return e
	}
	switch m.Stage {
	case "card_presented", "pin_entry", "processing":
		return nil
	case "":
		return Invalid("stage", "is required")
	}
	return Invalid("stage", "must be card_presented, pin_entry or processing")
}

// Validate checks the message.
func (m *SignatureRequiredEvent) Validate() *Error {
	return requireTransactionID(m.TransactionID)
}

var entryModes = map[string]bool{"contactless": true, "emv_chip": true, "magnetic_stripe": true, "manual_entry": true, "fallback": true}

// Validate checks the result. A maskedPan that shows more than the first six
// and last four digits is refused without echoing it.
func (m *PaymentResult) Validate() *Error {
	if e := requireTransactionID(m.TransactionID); e != nil {
		return e
	}
	switch m.Outcome {
	case OutcomeApproved, OutcomeDeclined, OutcomeError, OutcomeCancelled:
	case "":
		return Invalid("outcome", "is required")
	default:
		return Invalid("outcome", "must be approved, declined, error or cancelled")
	}
	if m.EntryMode != "" && !entryModes[m.EntryMode] {
		return Invalid("entryMode", "must be contactless, emv_chip, magnetic_stripe, manual_entry or fallback")
	}
	if m.MaskedPAN != "" && !MaskedPANOK(m.MaskedPAN) {
		return Invalid("maskedPan", "shows more than the first six and last four digits; mask the rest and send the result again")
	}
	if e := CheckText("maskedPan", m.MaskedPAN, false); e != nil {
		return e
	}
	if m.AmountMinor != nil {
		if e := CheckMinor(*m.AmountMinor, "amountMinor"); e != nil {
			return e
		}
	}
	for _, f := range []struct{ name, v string }{
		{"authCode", m.AuthCode}, {"responseCode", m.ResponseCode}, {"rrn", m.RRN},
		{"cardScheme", m.CardScheme}, {"errorCode", m.ErrorCode},
	} {
		if e := optionalID(f.name, f.v); e != nil {
			return e
		}
	}
	if e := checkReceipts(m.Receipts); e != nil {
		return e
	}
	return optionalText("errorMessage", m.ErrorMessage)
}

// maskedPANShape: up to six digits, a mask of characters that are no digit
// in any script (so "４" cannot pass as a mask), up to four digits.
var maskedPANShape = regexp.MustCompile(`^([0-9]{0,6})\P{N}+([0-9]{0,4})$|^[0-9]{0,4}$`)

// panSeparators are ignored in a masked PAN; built once (it is on the hot path).
var panSeparators = strings.NewReplacer(" ", "", "-", "")

// MaskedPANOK reports whether pan shows at most the first six and the last
// four digits of a card number (spaces and dashes are ignored).
func MaskedPANOK(pan string) bool {
	p := panSeparators.Replace(pan)
	return len(p) <= 32 && maskedPANShape.MatchString(p)
}

// Validate checks the message.
func (m *VoidResult) Validate() *Error {
	if e := requireTransactionID(m.TransactionID); e != nil {
		return e
	}
	if m.OK == nil {
		return Invalid("ok", "is required (true or false)")
	}
	return optionalText("errorMessage", m.ErrorMessage)
}

// Validate checks the message.
func (m *CaptureResult) Validate() *Error {
	if e := requireTransactionID(m.TransactionID); e != nil {
		return e
	}
	if m.OK == nil {
		return Invalid("ok", "is required (true or false)")
	}
	if m.AmountMinor != nil {
		if e := CheckMinor(*m.AmountMinor, "amountMinor"); e != nil {
			return e
		}
	}
	return optionalText("errorMessage", m.ErrorMessage)
}

// String renders an Inbound for debugging without its body (which may hold
// card data).
func (in Inbound) String() string { return fmt.Sprintf("%s(%s)", in.Action, in.RequestID) }
