package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// posCLI runs one parsed command.
type posCLI struct {
	args posArgs
	out  io.Writer
	opts client.Options
	http *client.HTTP
}

// hubError is a request the hub refused: its HTTP status and the contract's
// error (code, message, field).
type hubError struct {
	Status int
	Err    *protocol.Error
}

func (e *hubError) Error() string {
	return fmt.Sprintf("HTTP %d %s", e.Status, safe(e.Err.Error()))
}

func (e *hubError) Unwrap() error { return e.Err }

func (p *posCLI) run(ctx context.Context) error {
	a := p.args
	id := url.PathEscape(a.TxnID)
	switch a.Cmd {
	case "pay":
		return p.pay(ctx)
	case "status":
		_, err := p.txnCall(ctx, http.MethodGet, "/v1/transactions/"+id, nil)
		return err
	case "refund":
		return p.refund(ctx)
	case "cancel":
		_, err := p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+id+"/cancel", protocol.CancelRequest{TransactionID: a.TxnID})
		return err
	case "void":
		return p.actionAndWait(ctx, protocol.StatusVoided, func() (*protocol.Transaction, error) {
			return p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+id+"/void", protocol.VoidRequest{TransactionID: a.TxnID, Reason: a.Reason})
		})
	case "capture":
		return p.capture(ctx)
	case "signature":
		_, err := p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+id+"/signature", protocol.SignatureVerificationRequest{TransactionID: a.TxnID, Accepted: a.Accept})
		return err
	case "list":
		return p.list(ctx)
	case "terminals":
		return p.terminals(ctx)
	case "watch":
		return p.watch(ctx)
	case "http":
		return p.httpCall(ctx)
	}
	return fmt.Errorf("pos: unknown command %q", a.Cmd)
}

// call sends a signed request and returns the answer, or a *hubError for a
// refusal (after printing the raw body with --json).
func (p *posCLI) call(ctx context.Context, method, path string, body any) (*client.Response, error) {
	var h http.Header
	if p.args.IdempotencyKey != "" && method == http.MethodPost {
		h = http.Header{protocol.HeaderIdemKey: {p.args.IdempotencyKey}}
	}
	resp, err := p.http.Do(ctx, method, path, body, h)
	if err != nil {
		return nil, fmt.Errorf("pos: %s %s: %w", method, path, err)
	}
	if e := resp.Err(); e != nil {
		if p.args.JSON {
			fmt.Fprintf(p.out, "%s\n", safeJSON(resp.Body))
		}
		return nil, &hubError{Status: resp.Status, Err: e}
	}
	return resp, nil
}

// txnReply is the answer of every transaction endpoint.
type txnReply struct {
	Transaction *protocol.Transaction `json:"transaction"`
	Created     *bool                 `json:"created"`
}

// txnCall performs a request answered by {"transaction"} and prints it.
func (p *posCLI) txnCall(ctx context.Context, method, path string, body any) (*protocol.Transaction, error) {
	resp, err := p.call(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	var r txnReply
	if err := resp.Decode(&r); err != nil {
		return nil, err
	}
	if r.Transaction == nil {
		return nil, fmt.Errorf("pos: %s %s: answer has no transaction: %.200q", method, path, resp.Body)
	}
	if p.args.JSON {
		fmt.Fprintf(p.out, "%s\n", safeJSON(resp.Body))
	} else {
		if r.Created != nil && !*r.Created {
			fmt.Fprintln(p.out, "reference already used: this is the existing transaction")
		}
		fmt.Fprint(p.out, describeTxn(r.Transaction))
	}
	return r.Transaction, nil
}

func (p *posCLI) amountBody() (*int64, json.RawMessage) {
	if p.args.AmountMinor != 0 {
		v := p.args.AmountMinor
		return &v, nil
	}
	if p.args.Amount != "" {
		b, _ := json.Marshal(p.args.Amount)
		return nil, b
	}
	return nil, nil
}

func (p *posCLI) pay(ctx context.Context) error {
	a := p.args
	req := protocol.PaymentRequest{
		TerminalID: a.Terminal, Currency: a.Currency, Reference: a.Reference,
		CaptureMode: a.CaptureMode, Description: a.Description,
	}
	req.AmountMinor, req.Amount = p.amountBody()
	if a.TimeoutSeconds != 0 {
		v := a.TimeoutSeconds
		req.TimeoutSeconds = &v
	}
	return p.createAndWait(ctx, func() (*protocol.Transaction, error) {
		return p.txnCall(ctx, http.MethodPost, "/v1/payments", req)
	})
}

func (p *posCLI) refund(ctx context.Context) error {
	a := p.args
	req := protocol.RefundRequest{TransactionID: a.TxnID, Reference: a.Reference, Reason: a.Reason}
	req.AmountMinor, req.Amount = p.amountBody()
	return p.createAndWait(ctx, func() (*protocol.Transaction, error) {
		return p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+url.PathEscape(a.TxnID)+"/refund", req)
	})
}

func (p *posCLI) capture(ctx context.Context) error {
	a := p.args
	req := protocol.CaptureRequest{TransactionID: a.TxnID}
	switch {
	case a.AmountMinor != 0:
		v := a.AmountMinor
		req.AmountMinor = &v
	case a.Amount != "":
		// Capture takes minor units only: convert with the sale's currency.
		resp, err := p.call(ctx, http.MethodGet, "/v1/transactions/"+url.PathEscape(a.TxnID), nil)
		if err != nil {
			return err
		}
		var r txnReply
		if err := resp.Decode(&r); err != nil || r.Transaction == nil {
			return fmt.Errorf("pos capture: reading the sale: %v", err)
		}
		v, e := protocol.ParseAmount(a.Amount, r.Transaction.Currency, "amount")
		if e != nil {
			return fmt.Errorf("pos capture: %w", e)
		}
		req.AmountMinor = &v
	}
	return p.actionAndWait(ctx, protocol.StatusCompleted, func() (*protocol.Transaction, error) {
		return p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+url.PathEscape(a.TxnID)+"/capture", req)
	})
}

func (p *posCLI) list(ctx context.Context) error {
	a := p.args
	q := url.Values{}
	for k, v := range map[string]string{"terminalId": a.Terminal, "status": a.Status, "reference": a.Reference, "type": a.Type, "after": a.After} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if a.Limit != 0 {
		q.Set("limit", strconv.Itoa(a.Limit))
	}
	path := "/v1/transactions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := p.call(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if a.JSON {
		fmt.Fprintf(p.out, "%s\n", safeJSON(resp.Body))
		return nil
	}
	var page struct {
		Data       []*protocol.Transaction `json:"data"`
		HasMore    bool                    `json:"hasMore"`
		NextCursor *string                 `json:"nextCursor"`
	}
	if err := resp.Decode(&page); err != nil {
		return err
	}
	if len(page.Data) == 0 {
		fmt.Fprintln(p.out, "no transactions")
		return nil
	}
	tw := tabwriter.NewWriter(p.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tAMOUNT\tTYPE\tTERMINAL\tREFERENCE\tCREATED")
	for _, t := range page.Data {
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%s\n", safe(t.ID), safe(string(t.Status)), safe(t.Amount), safe(t.Currency), safe(t.Type),
			safe(t.TerminalID), safe(t.Reference), t.CreatedAt.Local().Format(time.DateTime))
	}
	_ = tw.Flush()
	if page.HasMore && page.NextCursor != nil {
		fmt.Fprintf(p.out, "more: termhub pos list --after %s\n", safe(*page.NextCursor))
	}
	return nil
}

func (p *posCLI) terminals(ctx context.Context) error {
	resp, err := p.call(ctx, http.MethodGet, "/v1/terminals", nil)
	if err != nil {
		return err
	}
	if p.args.JSON {
		fmt.Fprintf(p.out, "%s\n", safeJSON(resp.Body))
		return nil
	}
	var r struct {
		Data []protocol.TerminalInfo `json:"data"`
	}
	if err := resp.Decode(&r); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(p.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TERMINAL\tSTATUS\tLABEL\tCONNECTION\tCURRENT TRANSACTION")
	for _, t := range r.Data {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", safe(t.TerminalID), safe(t.Status), safe(t.Label), dash(t.ConnectionID), dash(t.CurrentTransactionID))
	}
	return tw.Flush()
}

// watch prints every message of the POS WebSocket until interrupted.
func (p *posCLI) watch(ctx context.Context) error {
	s, err := openPOSStream(ctx, p.opts, p.args.Key, p.args.Secret)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		m, err := s.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
		if p.args.JSON {
			fmt.Fprintf(p.out, "%s\n", safeJSON(m.Raw))
		} else {
			fmt.Fprintf(p.out, "%s %s\n", time.Now().Format("15:04:05.000"), describeMessage(m))
		}
		if id := m.MessageID(); id != "" && !p.args.NoAck {
			if err := s.Ack(id); err != nil {
				fmt.Fprintf(p.out, "ack %s failed: %s (it will be replayed)\n", safe(id), safe(err.Error()))
			}
		}
	}
}

// openPOSStream opens the API key's POS WebSocket as a client.POSStream,
// turning a refused upgrade into the hub's error.
func openPOSStream(ctx context.Context, opts client.Options, key, secret string) (*client.POSStream, error) {
	s, err := client.OpenPOSStream(ctx, opts, key, secret)
	if err != nil {
		var he *client.HandshakeError
		if errors.As(err, &he) {
			if e := he.Err(); e != nil {
				return nil, &hubError{Status: he.StatusCode, Err: e}
			}
		}
		return nil, fmt.Errorf("pos: connecting the WebSocket: %w", err)
	}
	return s, nil
}
