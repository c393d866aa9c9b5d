package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/termhub/termhub/protocol"
)

// pollInterval is how often a --wait reads the transaction: short enough
// that each step shows as it happens, far below the hub's per-key rate
// limit (200 requests a second by default).
const pollInterval = 200 * time.Millisecond

// waitFor follows the transaction start over REST (GET
// /v1/transactions/{id}) until done says a version of it is the one
// waited for, printing every new version on the way, and answering a
// signature prompt as --signature says. Polling REST, rather than
// listening on the POS WebSocket, needs no session of the API key: it
// displaces nothing (a `termhub pos watch` or POS app on the same key
// stays connected) and acks nothing (their messages stay theirs).
//
// It gives up after bound, and ends with ctx; errors that pass (the hub
// restarting, 429, 5xx) are retried until then.
func (p *posCLI) waitFor(ctx context.Context, start *protocol.Transaction, bound time.Duration, done func(*protocol.Transaction) bool) error {
	id := start.ID
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	last, lastErr := start, error(nil)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		t, body, err := p.getTxn(ctx, id)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !transient(err):
			return err
		case err != nil:
			lastErr = err
		case t.Version > last.Version:
			last = t
			if p.args.JSON {
				fmt.Fprintf(p.out, "%s\n", safeJSON(body))
			}
			if done(t) {
				if !p.args.JSON {
					fmt.Fprint(p.out, describeTxn(t))
				}
				return nil
			}
			if !p.args.JSON {
				fmt.Fprintln(p.out, describeStep(t))
			}
			if t.Status == protocol.StatusAwaitingSignature {
				if err := p.answerSignature(ctx, id); err != nil {
					return err
				}
			}
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("pos: gave up waiting for %s after %s (it is %s); see `termhub pos status %s`", safe(id), bound, safe(string(last.Status)), safe(id))
			if lastErr != nil {
				msg += "; last error: " + lastErr.Error()
			}
			return errors.New(msg)
		}
	}
}

// getTxn reads the transaction id, returning it and the body as received.
// It does not print a refusal (p.call would with --json): a poll's
// passing errors are not the command's answer.
func (p *posCLI) getTxn(ctx context.Context, id string) (*protocol.Transaction, []byte, error) {
	resp, err := p.http.Do(ctx, http.MethodGet, "/v1/transactions/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("pos: reading %s: %w", safe(id), err)
	}
	if e := resp.Err(); e != nil {
		return nil, nil, &hubError{Status: resp.Status, Err: e}
	}
	var r txnReply
	if err := resp.Decode(&r); err != nil {
		return nil, nil, err
	}
	if r.Transaction == nil {
		return nil, nil, fmt.Errorf("pos: GET %s: answer has no transaction: %.200q", safe(id), resp.Body)
	}
	return r.Transaction, resp.Body, nil
}

// transient reports whether a poll's error may pass by itself: the hub
// unreachable (restarting), rate limited, or failing for a while (5xx,
// e.g. 503 while Redis is away). A refusal (4xx) will not.
func transient(err error) bool {
	var he *hubError
	if errors.As(err, &he) {
		return he.Status == http.StatusTooManyRequests || he.Status >= 500
	}
	return true
}

// describeStep is one line for a version of a transaction on the way to
// the one waited for: its status, and why it changed when the history
// says (a refused capture keeps its status and only says why here).
func describeStep(t *protocol.Transaction) string {
	s := fmt.Sprintf("%s  %s  %s %s on %s  v%d", safe(string(t.Status)), safe(t.ID), safe(t.Amount), safe(t.Currency), safe(t.TerminalID), t.Version)
	if t.ErrorCode != "" {
		s += "  error " + safe(t.ErrorCode)
	}
	if n := len(t.History); n > 0 && t.History[n-1].Cause != "" {
		s += "  (" + safe(t.History[n-1].Cause) + ")"
	}
	return s
}

// actionAndWait runs a capture or void (act) and, with --wait, waits for
// the transaction's next version: the terminal's answer (COMPLETED or
// VOIDED, or the same status with a note when it refuses or does not
// answer in time). The action's own answer is the transaction from before
// it, since the hub only asks the terminal; without --wait a line says so.
func (p *posCLI) actionAndWait(ctx context.Context, target protocol.Status, act func() (*protocol.Transaction, error)) error {
	tx, err := act()
	if err != nil || tx.Status == target {
		return err // refused, or already done (a repeat answers again)
	}
	if !p.args.Wait {
		if !p.args.JSON {
			fmt.Fprintf(p.out, "  sent to the terminal: it is %s once the terminal agrees; `termhub pos status %s` (or --wait) shows it\n", target, safe(tx.ID))
		}
		return nil
	}
	err = p.waitFor(ctx, tx, p.args.WaitTimeout, func(*protocol.Transaction) bool { return true })
	if err != nil && ctx.Err() != nil {
		return &interruptedError{ID: tx.ID, Type: p.args.Cmd}
	}
	return err
}
