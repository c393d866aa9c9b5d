package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/termhub/termhub/protocol"
)

// exitInterrupted is the exit status of a command stopped by Ctrl-C
// (SIGINT) or SIGTERM: 128 + SIGINT's number, as shells report a process a
// SIGINT killed, so that scripts can tell "interrupted" from "failed" (1).
const exitInterrupted = 130

// interruptedError is a --wait that was interrupted. The transaction is
// not cancelled by it: the hub and the terminal carry on, so the message
// says how to find out how it ended.
type interruptedError struct {
	ID        string // the transaction, when it was created
	Type      string // sale or refund
	Reference string // when the create itself was interrupted
}

func (e *interruptedError) Error() string {
	if e.ID == "" {
		msg := "interrupted before the hub answered: the transaction may or may not have been created"
		if e.Reference != "" {
			msg += fmt.Sprintf("; look for it with `termhub pos list --reference %s`", safe(e.Reference))
		}
		return msg
	}
	what := "payment"
	if e.Type == "refund" {
		what = "refund"
	}
	return fmt.Sprintf("interrupted: the %s goes on without this command; check it with `termhub pos status %s`", what, safe(e.ID))
}

// ExitCode is the process's exit status for this error (see main).
func (e *interruptedError) ExitCode() int { return exitInterrupted }

// waitMargin is added to a payment's timeoutSeconds to bound pay --wait:
// the hub ends a payment the terminal does not finish in time, but a
// signature prompt (signature_timeout) and a terminal's reconnection
// (grace_period) can add to it.
const waitMargin = 2 * time.Minute

// createAndWait runs create and, with --wait, follows the transaction it
// made until its outcome (waitFor: over REST, so that it displaces no
// WebSocket of the key). The wait is bounded by the transaction's
// timeoutSeconds plus waitMargin, and by --wait-timeout.
func (p *posCLI) createAndWait(ctx context.Context, create func() (*protocol.Transaction, error)) error {
	tx, err := create()
	if err != nil {
		if ctx.Err() != nil {
			return &interruptedError{Reference: p.args.Reference}
		}
		return err
	}
	if !p.args.Wait || tx.Status.Final() {
		return nil // a reused reference may be final already: nothing will come
	}
	bound := p.args.WaitTimeout
	if tx.TimeoutSeconds > 0 {
		bound = min(bound, time.Duration(tx.TimeoutSeconds)*time.Second+waitMargin)
	}
	err = p.waitFor(ctx, tx, bound, func(t *protocol.Transaction) bool { return t.Status.Final() })
	if err != nil && ctx.Err() != nil {
		return &interruptedError{ID: tx.ID, Type: tx.Type}
	}
	return err
}

func (p *posCLI) answerSignature(ctx context.Context, id string) error {
	if p.args.Signature == "" {
		if !p.args.JSON {
			fmt.Fprintf(p.out, "  answer with: termhub pos signature %s --accept (or --decline)\n", safe(id))
		}
		return nil
	}
	accepted := p.args.Signature == "accept"
	resp, err := p.call(ctx, http.MethodPost, "/v1/transactions/"+url.PathEscape(id)+"/signature",
		protocol.SignatureVerificationRequest{TransactionID: id, Accepted: &accepted})
	if err != nil {
		return err
	}
	if p.args.JSON {
		fmt.Fprintf(p.out, "%s\n", safeJSON(resp.Body))
	} else {
		fmt.Fprintln(p.out, "  signature "+map[bool]string{true: "accepted", false: "declined"}[accepted])
	}
	return nil
}
