package bench

// finalKind is what one final message (paymentComplete or paymentVoided)
// is to the POS that receives it.
type finalKind uint8

const (
	// firstFinal is the transaction's first final: it counts.
	firstFinal finalKind = iota
	// redelivered is the same message again (same messageId): delivery is
	// at least once (docs/protocol.md#messageid-ack-and-replay), so a POS that reconnects may be replayed
	// what it had not acknowledged yet. Not a duplicate.
	redelivered
	// lateVoid is a paymentVoided after the final: the hub voiding a late
	// approval, a second message by contract.
	lateVoid
	// duplicateFinal is a second, different final for one transaction (or
	// a final for a second transaction of one payment request): what
	// "nothing doubled" forbids.
	duplicateFinal
)

// finalLedger counts the finals a POS receives by transaction id, so that
// a replayed message is told from a doubled final. It is not safe for
// concurrent use: a posDriver calls it under its lock.
type finalLedger struct {
	byTxn map[string]string // transaction id → messageId of its first final
	bySeq map[int]string    // payment (request) → its transaction id
}

// record classifies a final of transaction txn for payment seq with
// message id mid. A final without a transaction id is keyed by its
// payment; one without a message id is never taken for a redelivery.
func (l *finalLedger) record(seq int, txn, mid string, voided bool) finalKind {
	if l.byTxn == nil {
		l.byTxn, l.bySeq = map[string]string{}, map[int]string{}
	}
	if txn == "" {
		txn = "seq:" + itoa(seq)
	}
	first, seen := l.byTxn[txn]
	switch {
	case !seen:
		if other, ok := l.bySeq[seq]; ok && other != txn {
			return duplicateFinal
		}
		l.byTxn[txn], l.bySeq[seq] = mid, txn
		return firstFinal
	case mid != "" && mid == first:
		return redelivered
	case voided:
		return lateVoid
	default:
		return duplicateFinal
	}
}
