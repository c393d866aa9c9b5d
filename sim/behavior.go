package sim

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/termhub/termhub/protocol"
)

// Behavior is what a simulated terminal does with one startPayment.
type Behavior int

// Behaviours. The zero value approves.
const (
	// Approve: commandReceived, card_presented, approved.
	Approve Behavior = iota
	// Decline: declined with responseCode "05" (do not honour).
	Decline
	// InsufficientFunds: declined with responseCode "51" and no errorCode.
	InsufficientFunds
	// TerminalError: outcome error with errorCode terminal_error.
	TerminalError
	// Signature: signatureRequired after the card, then the outcome the
	// hub's signatureVerified asks for (accepted → approved, else declined).
	Signature
	// NoAnswer: the startPayment is ignored, so the hub's payment timeout
	// runs out (terminal_unreachable). A later cancelPayment is still
	// answered with a cancelled result.
	NoAnswer
	// DropAndReturn: after card_presented the connection is dropped without
	// a close handshake; the terminal stays away Options.ReturnDelay,
	// reconnects and sends the approval it cached meanwhile.
	DropAndReturn
)

var behaviorNames = [...]string{"approve", "decline", "insufficient_funds", "terminal_error", "signature", "no_answer", "drop_and_return"}

func (b Behavior) String() string {
	if b >= 0 && int(b) < len(behaviorNames) {
		return behaviorNames[b]
	}
	return fmt.Sprintf("Behavior(%d)", int(b))
}

// ParseBehavior is the inverse of Behavior.String, for flags and configs.
func ParseBehavior(s string) (Behavior, error) {
	for i, n := range behaviorNames {
		if strings.EqualFold(s, n) {
			return Behavior(i), nil
		}
	}
	return 0, fmt.Errorf("sim: unknown behaviour %q (want one of %s)", s, strings.Join(behaviorNames[:], ", "))
}

// BehaviorForAmount is the default rule for a sale: the last two digits of
// the amount in minor units (1205 → Decline, 1251 → InsufficientFunds, 1291 →
// TerminalError, 1255 → Signature, 1299 → NoAnswer, 1277 → DropAndReturn,
// anything else → Approve).
func BehaviorForAmount(amountMinor int64) Behavior {
	switch amountMinor % 100 {
	case 5:
		return Decline
	case 51:
		return InsufficientFunds
	case 91:
		return TerminalError
	case 55:
		return Signature
	case 99:
		return NoAnswer
	case 77:
		return DropAndReturn
	}
	return Approve
}

// DefaultScript decides a startPayment when Options.Script is nil: refunds
// approve, sales follow BehaviorForAmount.
func DefaultScript(sp protocol.StartPayment) Behavior {
	if sp.Type == protocol.TypeRefund {
		return Approve
	}
	return BehaviorForAmount(sp.AmountMinor)
}

// Card data every simulated result carries.
const (
	CardScheme = "visa"
	MaskedPAN  = "424242******4242"
	EntryMode  = "contactless"
)

// digits derives n stable decimal digits from the transaction id, so a
// re-sent result is byte for byte the first one and tests can predict it.
func digits(id, salt string, n int) string {
	h := fnv.New64a()
	h.Write([]byte(salt + "\x00" + id))
	s := fmt.Sprintf("%020d", h.Sum64())
	return s[len(s)-n:]
}

// AuthCode is the authorization code the simulator gives transaction id.
func AuthCode(id string) string { return digits(id, "auth", 6) }

// RRN is the retrieval reference number the simulator gives transaction id.
func RRN(id string) string { return digits(id, "rrn", 12) }

func approved(sp protocol.StartPayment) protocol.PaymentResult {
	r := card(sp, protocol.OutcomeApproved, "00")
	r.AuthCode = AuthCode(sp.TransactionID)
	r.Receipts = receipts(sp, r, "APPROVED")
	return r
}

func declined(sp protocol.StartPayment, responseCode, errorCode, message string) protocol.PaymentResult {
	r := card(sp, protocol.OutcomeDeclined, responseCode)
	r.ErrorCode, r.ErrorMessage = errorCode, message
	r.Receipts = receipts(sp, r, "DECLINED")
	return r
}

func failed(sp protocol.StartPayment, errorCode, responseCode, message string) protocol.PaymentResult {
	return protocol.PaymentResult{
		TransactionID: sp.TransactionID, Outcome: protocol.OutcomeError,
		ResponseCode: responseCode, ErrorCode: errorCode, ErrorMessage: message,
	}
}

func cancelled(id string) protocol.PaymentResult {
	return protocol.PaymentResult{TransactionID: id, Outcome: protocol.OutcomeCancelled, ErrorMessage: "cancelled at the terminal"}
}

func card(sp protocol.StartPayment, outcome, responseCode string) protocol.PaymentResult {
	return protocol.PaymentResult{
		TransactionID: sp.TransactionID, Outcome: outcome, ResponseCode: responseCode,
		RRN: RRN(sp.TransactionID), CardScheme: CardScheme, MaskedPAN: MaskedPAN, EntryMode: EntryMode,
	}
}

// resultFor is the final result of a payment that ran to its end with
// behaviour b. accepted is the signature answer (Signature only).
func resultFor(sp protocol.StartPayment, b Behavior, accepted bool) protocol.PaymentResult {
	switch b {
	case Decline:
		return declined(sp, "05", "", "Do not honour")
	case InsufficientFunds:
		return declined(sp, "51", "", "Insufficient funds")
	case TerminalError:
		return failed(sp, protocol.TxnErrTerminalError, "91", "Issuer or switch inoperative")
	case Signature:
		if !accepted {
			return declined(sp, "", protocol.TxnErrSignatureDeclined, "Signature not accepted")
		}
	}
	return approved(sp)
}

func receipts(sp protocol.StartPayment, r protocol.PaymentResult, verdict string) *protocol.Receipts {
	kind := "SALE"
	if sp.Type == protocol.TypeRefund {
		kind = "REFUND"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "TERMHUB SIMULATOR\n%s %s %s\n%s %s %s\n", kind, sp.Amount, sp.Currency, strings.ToUpper(r.CardScheme), r.MaskedPAN, r.EntryMode)
	if sp.Reference != "" {
		fmt.Fprintf(&b, "REF %s\n", sp.Reference)
	}
	if r.AuthCode != "" {
		fmt.Fprintf(&b, "AUTH %s ", r.AuthCode)
	}
	fmt.Fprintf(&b, "RRN %s\n%s", r.RRN, verdict)
	if r.ResponseCode != "" {
		fmt.Fprintf(&b, " (%s)", r.ResponseCode)
	}
	body := b.String()
	return &protocol.Receipts{Customer: body + "\nCUSTOMER COPY", Merchant: body + "\nMERCHANT COPY"}
}
