package session

import (
	"context"
	"errors"
	"time"

	"github.com/termhub/termhub/protocol"
)

// TerminalEvent applies a message from a terminal to its transaction. A
// transaction of another terminal is not found.
func (e *Engine) TerminalEvent(ctx context.Context, merchantID, deviceID string, body any) error {
	var err error
	e.TerminalEvents(ctx, merchantID, deviceID, []any{body}, func(_ int, e error) { err = e })
	return err
}

// TerminalEvents applies messages of one terminal, in the order it sent
// them, and calls refused with the index and error of each one not applied,
// as soon as that is known: after what the messages before it caused was
// delivered, before what the messages after it cause. Consecutive messages
// about one transaction are committed together (updateRun), with the same
// outcome as one TerminalEvent each.
func (e *Engine) TerminalEvents(ctx context.Context, merchantID, deviceID string, bodies []any, refused func(i int, err error)) {
	for i := 0; i < len(bodies); {
		id, ev, err := terminalEvent(bodies[i])
		if err != nil {
			refused(i, err)
			i++
			continue
		}
		evs := []Event{ev}
		for j := i + 1; j < len(bodies); j++ {
			id2, ev2, err := terminalEvent(bodies[j])
			if err != nil || id2 != id {
				break
			}
			evs = append(evs, ev2)
		}
		if e.work.holds(merchantID, id) {
			// Events that arrived earlier wait to be applied (or a commit
			// of the transaction is being resolved): these go after them.
			e.work.queue(merchantID, deviceID, id, evs, false)
			for k := i; k < i+len(evs); k++ {
				refused(k, ErrUnavailable)
			}
			i += len(evs)
			continue
		}
		n, perr, err := e.terminalRun(ctx, merchantID, deviceID, id, evs)
		switch {
		case perr != nil: // events before it are applied; those after it get a run of their own
			refused(i+n, perr)
			i += n + 1
		case err != nil: // nothing of the run was committed (or, if its answer was lost, it may have been)
			if errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrOutcomeUnknown) {
				// The hub keeps what the terminal sent and applies it once
				// Redis answers, in order (a lost commit is retried by its
				// resolver if it was not applied). The terminal, told
				// unavailable, sends it again too; the repeat is harmless.
				e.work.queue(merchantID, deviceID, id, evs, false)
			}
			for k := i; k < i+len(evs); k++ {
				refused(k, err)
			}
			i += len(evs)
		default:
			i += len(evs)
		}
	}
}

// terminalEvent is the transaction and event of a terminal's message.
func terminalEvent(body any) (string, Event, error) {
	switch m := body.(type) {
	case *protocol.CommandReceived:
		return m.TransactionID, EvCommandReceived{}, nil
	case *protocol.PaymentProgress:
		return m.TransactionID, EvProgress{Stage: m.Stage}, nil
	case *protocol.SignatureRequiredEvent:
		return m.TransactionID, EvSignatureRequired{}, nil
	case *protocol.PaymentResult:
		return m.TransactionID, EvResult{Result: *m}, nil
	case *protocol.VoidResult:
		return m.TransactionID, EvVoidResult{OK: *m.OK, ErrorMessage: m.ErrorMessage}, nil
	case *protocol.CaptureResult:
		amt := int64(0)
		if m.AmountMinor != nil {
			amt = *m.AmountMinor
		}
		return m.TransactionID, EvCaptureResult{OK: *m.OK, AmountMinor: amt, ErrorMessage: m.ErrorMessage}, nil
	}
	return "", nil, protocol.Errorf(protocol.CodeUnknownAction, "action", "unexpected message")
}

// terminalRun applies evs, a terminal's consecutive events about
// transaction id. It returns how many were applied and, when one was
// refused, its refusal (the events after it are not applied); or an error
// that is every event's (the transaction is not the terminal's, or the
// store failed).
func (e *Engine) terminalRun(ctx context.Context, merchantID, deviceID, id string, evs []Event) (int, *protocol.Error, error) {
	t, err := e.loadForUpdate(ctx, merchantID, id)
	if errors.Is(err, ErrNotFound) || (err == nil && t.TerminalID != deviceID) {
		return 0, nil, protocol.Errorf(protocol.CodeTransactionNotFound, "transactionId", "no such transaction for this terminal")
	}
	if err != nil {
		return 0, nil, err
	}
	_, n, perr, err := e.updateRun(ctx, merchantID, id, evs, nil, deviceID)
	if err != nil {
		return 0, nil, err
	}
	return n, perr, nil
}

// TerminalConnected resumes a device's transactions after it (re)connects
// and returns every command still open for it (docs/protocol.md#terminal-protocol), oldest
// transaction first, for the caller to send.
func (e *Engine) TerminalConnected(ctx context.Context, merchantID, deviceID, connID string) ([]TerminalCommand, error) {
	// Not during a create for the device (which holds this lock until it
	// has sent its command): the hub registers the connection before it
	// calls this, so a sale committed meanwhile is either sent live before
	// the open commands are read, and the hub sends it once, or committed
	// after, and not among them.
	defer e.lockDevice(merchantID, deviceID)()
	ids, err := e.store.openIDs(ctx, merchantID, deviceID)
	if err != nil {
		return nil, err
	}
	txns := make([]*Txn, 0, len(ids))
	for _, id := range ids {
		// Back, and sent if it never was, in one commit: a PENDING sale
		// that waited for the terminal swaps its grace deadline for its
		// payment deadline at once, never left with neither.
		t, _, _, err := e.updateRun(ctx, merchantID, id, []Event{EvTerminalBack{ConnectionID: connID}, EvSent{ConnectionID: connID}}, nil, "")
		if errors.Is(err, ErrNotFound) {
			e.store.dropOpen(ctx, merchantID, deviceID, id)
			continue
		}
		if err != nil {
			return nil, err
		}
		txns = append(txns, t)
	}
	sortByCreated(txns)
	var cmds []TerminalCommand
	for _, t := range txns {
		cmds = append(cmds, t.OpenCommands()...)
	}
	return cmds, nil
}

// TerminalDropped starts the grace period of every transaction the device
// was working on.
func (e *Engine) TerminalDropped(ctx context.Context, merchantID, deviceID string, graceUntil time.Time) error {
	ids, err := e.store.openIDs(ctx, merchantID, deviceID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, _, err := e.update(ctx, merchantID, id, EvTerminalDropped{GraceUntil: graceUntil}, nil); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

func sortByCreated(ts []*Txn) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].CreatedAt.Before(ts[j-1].CreatedAt); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// DevicesWithWork lists the merchant's devices that have transactions with
// open commands (work in flight or owed to the terminal).
func (e *Engine) DevicesWithWork(ctx context.Context, merchantID string, devices []string) ([]string, error) {
	counts, err := e.store.openCounts(ctx, merchantID, devices)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, d := range devices {
		if counts[i] > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}
