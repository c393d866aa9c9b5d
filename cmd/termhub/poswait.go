package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/termhub/termhub/client"
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

// createAndWait runs create and, with --wait, follows the transaction it
// made on the WebSocket until its outcome. The WebSocket is opened first so
// that no message about the new transaction can be missed.
func (p *posCLI) createAndWait(ctx context.Context, create func() (*protocol.Transaction, error)) error {
	if !p.args.Wait {
		_, err := create()
		return err
	}
	s, err := openPOSStream(ctx, p.opts, p.args.Key, p.args.Secret)
	if err != nil {
		return err
	}
	defer s.Close()
	tx, err := create()
	if err != nil {
		if ctx.Err() != nil {
			return &interruptedError{Reference: p.args.Reference}
		}
		return err
	}
	if tx.Status.Final() {
		return nil // nothing more will come (a reused reference)
	}
	if err := p.follow(ctx, s, tx.ID); err != nil {
		if ctx.Err() != nil {
			return &interruptedError{ID: tx.ID, Type: tx.Type}
		}
		return err
	}
	return nil
}

// follow prints the messages about id until its outcome, then acks that
// message (and with it, the ack being cumulative, every earlier one).
func (p *posCLI) follow(ctx context.Context, s *client.POSStream, id string) error {
	wctx, cancel := context.WithTimeout(ctx, p.args.WaitTimeout)
	defer cancel()
	for {
		m, err := s.Next(wctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("pos: gave up waiting for %s after %s; see `termhub pos status %s`", safe(id), p.args.WaitTimeout, safe(id))
			}
			return err
		}
		if m.MessageID() == "" {
			continue
		}
		var ev protocol.POSEvent
		if err := m.Decode(&ev); err != nil || ev.TransactionID != id || ev.Transaction == nil {
			continue
		}
		if p.args.JSON {
			fmt.Fprintf(p.out, "%s\n", safeJSON(m.Raw))
		} else {
			fmt.Fprintln(p.out, describeEvent(ev))
		}
		if ev.Action == protocol.ActionSignatureRequired {
			if err := p.answerSignature(ctx, id); err != nil {
				return err
			}
			continue
		}
		st := ev.Transaction.Status
		if ev.Action == protocol.ActionPaymentComplete || ev.Action == protocol.ActionPaymentVoided || st == protocol.StatusAuthorized {
			if err := s.AckStored(ctx, ev.MessageID); err != nil {
				return fmt.Errorf("pos: acking %s: %w", ev.MessageID, err)
			}
			if !p.args.JSON {
				fmt.Fprint(p.out, describeTxn(ev.Transaction))
			}
			return nil
		}
	}
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
