package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// defaultURL is where the command-line tools look for a hub by default: the
// listen address of testdata/demo.yaml.
const defaultURL = "http://127.0.0.1:8080"

const posUsage = `usage: termhub pos COMMAND [flags] [TXN_ID]

A command-line POS: signed REST calls and the POS WebSocket (CONTRACT §2, §5).

commands:
  pay --terminal ID (--amount 12.50 | --amount-minor 1250) [--currency USD]
      [--reference R] [--capture manual] [--wait [--signature accept|decline]]
                            create a sale; --wait follows it to its outcome
  status TXN_ID             the transaction as it stands
  refund TXN_ID [--amount 5.00] [--reason R] [--wait]
                            refund all or part of a completed sale
  cancel TXN_ID             cancel a sale before the card is presented
  void TXN_ID [--reason R]  reverse a completed or authorized sale
  capture TXN_ID [--amount 20.00]
                            capture an authorized sale (all of it by default)
  signature TXN_ID (--accept | --decline)
                            answer a terminal's signature prompt
  list [--terminal ID] [--status S] [--reference R] [--type sale|refund]
       [--limit N] [--after CURSOR]
                            transactions, newest first
  terminals                 the merchant's terminals and their status
  watch [--no-ack]          print every POS WebSocket message, acking durable ones

common flags (also after the command's arguments):
  --url URL        hub address (default $TERMHUB_URL or ` + defaultURL + `)
  --key ID         API key id (default $TERMHUB_KEY or pk_demo)
  --secret SECRET  API key secret (default $TERMHUB_SECRET or sk_demo)
  --json           print the hub's raw JSON instead of readable lines

The WebSocket (pay --wait, refund --wait, watch) is the API key's one POS
connection: it displaces any other connection of the same key, such as a
running POS app, so give the CLI a key of its own.
`

// posArgs is a parsed `termhub pos` command line.
type posArgs struct {
	Cmd    string
	URL    string
	Key    string
	Secret string
	JSON   bool

	TxnID string // status, refund, cancel, void, capture, signature

	Terminal       string
	Amount         string // decimal, converted by the hub
	AmountMinor    int64  // 0: not given
	Currency       string
	Reference      string
	Description    string
	CaptureMode    string
	TimeoutSeconds int
	IdempotencyKey string
	Reason         string
	Wait           bool
	WaitTimeout    time.Duration
	Signature      string // pay --wait: answer a signature prompt with accept or decline
	Accept         *bool  // signature command

	Status, Type, After string // list filters (with Terminal and Reference)
	Limit               int

	NoAck bool // watch
}

// runPOSCommand is `termhub pos`.
func runPOSCommand(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return escapeError(posMain(ctx, args, os.Getenv, os.Stdout, os.Stderr))
}

func posMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	a, err := parsePOSArgs(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	p := &posCLI{args: a, out: stdout,
		opts: client.Options{BaseURL: a.URL}}
	p.http = client.NewHTTP(p.opts, a.Key, a.Secret)
	return p.run(ctx)
}

// positional says how many TXN_ID arguments each command takes.
var posCommands = map[string]int{
	"pay": 0, "status": 1, "refund": 1, "cancel": 1, "void": 1, "capture": 1, "signature": 1,
	"list": 0, "terminals": 0, "watch": 0,
}

func parsePOSArgs(args []string, getenv func(string) string, stderr io.Writer) (posArgs, error) {
	var a posArgs
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, posUsage)
		if len(args) == 0 {
			return a, errors.New("pos: a command is required")
		}
		return a, flag.ErrHelp
	}
	a.Cmd = args[0]
	nargs, ok := posCommands[a.Cmd]
	if !ok {
		fmt.Fprint(stderr, posUsage)
		return a, fmt.Errorf("pos: unknown command %q", a.Cmd)
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("pos "+a.Cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, posUsage) }
	fs.StringVar(&a.URL, "url", env("TERMHUB_URL", defaultURL), "hub address")
	fs.StringVar(&a.Key, "key", env("TERMHUB_KEY", "pk_demo"), "API key id")
	fs.StringVar(&a.Secret, "secret", env("TERMHUB_SECRET", "sk_demo"), "API key secret")
	fs.BoolVar(&a.JSON, "json", false, "raw JSON output")

	amountFlags := func() {
		fs.StringVar(&a.Amount, "amount", "", "amount as a decimal string, e.g. 12.50")
		fs.Int64Var(&a.AmountMinor, "amount-minor", 0, "amount in minor units, e.g. 1250")
	}
	waitFlags := func() {
		fs.BoolVar(&a.Wait, "wait", false, "follow the transaction on the WebSocket until its outcome")
		fs.DurationVar(&a.WaitTimeout, "wait-timeout", 15*time.Minute, "give up waiting after this long")
	}
	switch a.Cmd {
	case "pay":
		fs.StringVar(&a.Terminal, "terminal", "", "terminal (device id) to charge on (required)")
		amountFlags()
		fs.StringVar(&a.Currency, "currency", "USD", "ISO 4217 currency")
		fs.StringVar(&a.Reference, "reference", "", "the merchant's order id (default: generated)")
		fs.StringVar(&a.Description, "description", "", "text for the terminal")
		fs.StringVar(&a.CaptureMode, "capture", "", "auto (default) or manual")
		fs.IntVar(&a.TimeoutSeconds, "timeout", 0, "payment timeout in seconds (10–600; default the hub's)")
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
		fs.StringVar(&a.Signature, "signature", "", "with --wait: answer a signature prompt with accept or decline (default: print it and keep waiting)")
		waitFlags()
	case "refund":
		amountFlags()
		fs.StringVar(&a.Reference, "reference", "", "the refund's own reference (optional)")
		fs.StringVar(&a.Reason, "reason", "", "why")
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
		waitFlags()
	case "cancel":
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
	case "void":
		fs.StringVar(&a.Reason, "reason", "", "why")
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
	case "capture":
		amountFlags()
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
	case "signature":
		fs.BoolFunc("accept", "the signature matches", func(string) error { v := true; a.Accept = &v; return nil })
		fs.BoolFunc("decline", "the signature does not match", func(string) error { v := false; a.Accept = &v; return nil })
	case "list":
		fs.StringVar(&a.Terminal, "terminal", "", "only this terminal")
		fs.StringVar(&a.Status, "status", "", "only this status, e.g. COMPLETED")
		fs.StringVar(&a.Reference, "reference", "", "only this reference")
		fs.StringVar(&a.Type, "type", "", "sale or refund")
		fs.IntVar(&a.Limit, "limit", 0, "at most this many (1–100)")
		fs.StringVar(&a.After, "after", "", "the cursor of the previous page")
	case "watch":
		fs.BoolVar(&a.NoAck, "no-ack", false, "do not ack durable messages (they are replayed next time)")
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return a, err
	}
	if len(pos) != nargs {
		if nargs == 1 {
			return a, fmt.Errorf("pos %s: want one TXN_ID argument, got %d", a.Cmd, len(pos))
		}
		return a, fmt.Errorf("pos %s: unexpected argument %q", a.Cmd, pos[0])
	}
	if nargs == 1 {
		a.TxnID = pos[0]
	}
	if a.Amount != "" && a.AmountMinor != 0 {
		return a, fmt.Errorf("pos %s: give --amount or --amount-minor, not both", a.Cmd)
	}
	if a.AmountMinor < 0 {
		return a, fmt.Errorf("pos %s: --amount-minor must be positive", a.Cmd)
	}
	switch a.Cmd {
	case "pay":
		if a.Terminal == "" {
			return a, errors.New("pos pay: --terminal is required")
		}
		if a.Amount == "" && a.AmountMinor == 0 {
			return a, errors.New("pos pay: --amount or --amount-minor is required")
		}
		if a.Reference == "" {
			a.Reference = newReference()
		}
		a.Currency = strings.ToUpper(a.Currency)
		if a.Signature != "" && a.Signature != "accept" && a.Signature != "decline" {
			return a, errors.New("pos pay: --signature must be accept or decline")
		}
		if a.Signature != "" && !a.Wait {
			return a, errors.New("pos pay: --signature only makes sense with --wait")
		}
	case "signature":
		if a.Accept == nil {
			return a, errors.New("pos signature: --accept or --decline is required")
		}
	}
	if a.URL == "" || a.Key == "" || a.Secret == "" {
		return a, errors.New("pos: --url, --key and --secret must not be empty")
	}
	return a, nil
}

// parseInterspersed parses flags wherever they appear among the positional
// arguments ("pos status txn_1 --json" as well as "pos status --json
// txn_1"); everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func newReference() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return "cli-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

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
		_, err := p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+id+"/void", protocol.VoidRequest{TransactionID: a.TxnID, Reason: a.Reason})
		return err
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
	defer s.close()
	tx, err := create()
	if err != nil {
		return err
	}
	if tx.Status.Final() {
		return nil // nothing more will come (a reused reference)
	}
	return p.follow(ctx, s, tx.ID)
}

// follow prints the messages about id until its outcome, then acks that
// message (and with it, the ack being cumulative, every earlier one).
func (p *posCLI) follow(ctx context.Context, s *posStream, id string) error {
	wctx, cancel := context.WithTimeout(ctx, p.args.WaitTimeout)
	defer cancel()
	for {
		m, err := s.next(wctx)
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
			if err := s.ackStored(ctx, ev.MessageID); err != nil {
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
		fmt.Fprintf(p.out, "  signature %sed\n", p.args.Signature)
	}
	return nil
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
	_, err := p.txnCall(ctx, http.MethodPost, "/v1/transactions/"+url.PathEscape(a.TxnID)+"/capture", req)
	return err
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
	defer s.close()
	for {
		m, err := s.next(ctx)
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
			if err := s.ack(id); err != nil {
				fmt.Fprintf(p.out, "ack %s failed: %s (it will be replayed)\n", safe(id), safe(err.Error()))
			}
		}
	}
}

// ---- the POS WebSocket, kept open across drops ----

// errKeyTaken stops a stream whose connection another client of the same
// API key displaced: reconnecting would only displace that client in turn.
var errKeyTaken = errors.New("pos: another connection with this API key took over (api_key_used_elsewhere); not reconnecting so as not to fight over the key")

// posStream is a POS WebSocket whose messages, and the `connected`
// greeting of every (re)connection, arrive on one channel. It redials
// after drops and hub restarts (the hub replays unacked messages), but not
// after a displacement by another client of the key.
type posStream struct {
	opts        client.Options
	key, secret string
	msgs        chan client.Message
	done        chan struct{} // closed when the stream has ended
	err         error         // why it ended; set before done is closed
	stop        context.CancelCauseFunc

	mu   sync.Mutex
	conn *client.Conn // guarded by mu
}

// openPOSStream dials once (so that bad credentials or an unreachable hub
// fail at once) and keeps the connection in a Reconnector from then on.
func openPOSStream(ctx context.Context, opts client.Options, key, secret string) (*posStream, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	first, err := client.DialPOS(dctx, opts, key, secret)
	cancel()
	if err != nil {
		var he *client.HandshakeError
		if errors.As(err, &he) {
			if e := he.Err(); e != nil {
				return nil, &hubError{Status: he.StatusCode, Err: e}
			}
		}
		return nil, fmt.Errorf("pos: connecting the WebSocket: %w", err)
	}
	rctx, stop := context.WithCancelCause(ctx)
	s := &posStream{opts: opts, key: key, secret: secret, msgs: make(chan client.Message, 1024), done: make(chan struct{}), stop: stop}
	push := func(m client.Message) {
		select {
		case s.msgs <- m:
		case <-rctx.Done():
		}
	}
	r := &client.Reconnector{
		OnConnect: func(c *client.Conn) {
			s.mu.Lock()
			s.conn = c
			s.mu.Unlock()
			push(c.Greeting)
		},
		OnDisconnect: func(error) {
			s.mu.Lock()
			s.conn = nil
			s.mu.Unlock()
		},
	}
	dial := func(ctx context.Context) (*client.Conn, error) {
		if c := first; c != nil {
			first = nil
			return c, nil
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return client.DialPOS(dctx, opts, key, secret)
	}
	go func() {
		err := r.Run(rctx, dial, func(_ context.Context, _ *client.Conn, m client.Message) error {
			push(m)
			if m.Action == protocol.ActionForceDisconnect {
				var fd protocol.ForceDisconnect
				if m.Decode(&fd) == nil && fd.Reason == protocol.ReasonAPIKeyUsedElsewhere {
					stop(errKeyTaken)
				}
			}
			return nil
		})
		if err == nil {
			if cause := context.Cause(rctx); cause != nil && !errors.Is(cause, context.Canceled) {
				err = cause
			}
		}
		s.err = err
		close(s.done)
	}()
	return s, nil
}

// next returns the next message, or why the stream ended.
func (s *posStream) next(ctx context.Context) (client.Message, error) {
	select {
	case m := <-s.msgs:
		return m, nil
	default:
	}
	select {
	case m := <-s.msgs:
		return m, nil
	case <-s.done:
		select {
		case m := <-s.msgs:
			return m, nil
		default:
		}
		if s.err != nil {
			return client.Message{}, s.err
		}
		return client.Message{}, errors.New("pos: the WebSocket closed")
	case <-ctx.Done():
		return client.Message{}, ctx.Err()
	}
}

// ack acknowledges messageID on the current connection. Its context is not
// the caller's: a write whose context ends closes the WebSocket.
func (s *posStream) ack(messageID string) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Ack(ctx, messageID)
}

// ackStored acknowledges messageID and returns once the hub has stored the
// ack, so that a command that exits right after cannot leave it in flight.
// The hub applies an ack beside the frames after it but answers those only
// once it is stored (docs/protocol.md), so the reply to a listTerminals
// sent on the same connection right after is the confirmation; an error
// reply to the ack (an unknown id, a failed store) comes before it.
func (s *posStream) ackStored(ctx context.Context, messageID string) error {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Writes use a context of their own: one that ends closes the WebSocket.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	confirm := "ack-" + messageID
	if err := c.Ack(wctx, messageID); err != nil {
		return err
	}
	if err := c.SendAction(wctx, protocol.ActionListTerminals, confirm, struct{}{}); err != nil {
		return err
	}
	for {
		m, err := s.next(ctx)
		if err != nil {
			return fmt.Errorf("not confirmed (it may be replayed): %w", err)
		}
		var r struct {
			RequestID string `json:"requestId"`
		}
		_ = m.Decode(&r)
		switch {
		case m.Action == protocol.ActionError && r.RequestID == "": // the ack's own error reply
			if e := m.Err(); e != nil {
				return e
			}
			return errors.New("the hub refused the ack")
		case m.Action == protocol.ActionTerminals && r.RequestID == confirm:
			return nil
		}
	}
}

// close ends the stream (the Reconnector closes the connection normally)
// and waits for it.
func (s *posStream) close() {
	s.stop(context.Canceled)
	<-s.done
}

// ---- human-readable output ----
//
// Everything printed comes from the hub, and much of it from terminals and
// POS apps: every string goes through safe (or safeJSON) so that no escape
// sequence, control character or bidi override reaches the operator's
// terminal as such.

// safe returns s as it is if it is printable text, and otherwise quoted Go
// style ("\x1b[2J…"), so that an escape sequence, a control character
// (C0, DEL, C1), a Unicode format character (bidi overrides, zero-width
// characters), a line or paragraph separator, or bytes that are not UTF-8
// are shown rather than acted on by the terminal.
func safe(s string) string {
	if printable(s) {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

// printable reports whether s is valid UTF-8 made only of graphic
// characters (letters, marks, numbers, punctuation, symbols and spaces).
func printable(s string) bool {
	for i, r := range s {
		switch {
		case r >= 0x20 && r < 0x7f:
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false // a byte that is not UTF-8
			}
		case !unicode.IsGraphic(r):
			return false
		}
	}
	return true
}

// safeLines is safe for each line of a text of several lines, such as an
// error message made by errors.Join.
func safeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = safe(l)
	}
	return strings.Join(lines, "\n")
}

// shownError is an error whose message is safe to print (safeLines);
// errors.Is and errors.As see the error it wraps.
type shownError struct{ err error }

func (e shownError) Error() string { return safeLines(e.err.Error()) }
func (e shownError) Unwrap() error { return e.err }

// escapeError wraps err, if any, in a shownError: what a command returns is
// printed by main.
func escapeError(err error) error {
	if err == nil {
		return nil
	}
	return shownError{err}
}

// safeJSON returns a JSON text from the hub for printing on one line: valid
// JSON is compacted and every character that is not graphic (inside
// strings: DEL, C1, format characters, separators) is written as a \u
// escape, bytes that are not UTF-8 as \ufffd, so the result is the same
// JSON value. Anything else is treated as text (safe).
func safeJSON(b []byte) string {
	var buf bytes.Buffer
	if !json.Valid(b) || json.Compact(&buf, b) != nil {
		return safe(strings.TrimSpace(string(b)))
	}
	out := buf.Bytes()
	if printable(string(out)) {
		return string(out)
	}
	var sb strings.Builder
	for i := 0; i < len(out); {
		r, size := utf8.DecodeRune(out[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			sb.WriteString(`\ufffd`)
		case !unicode.IsGraphic(r):
			if r > 0xffff {
				hi, lo := utf16.EncodeRune(r)
				fmt.Fprintf(&sb, `\u%04x\u%04x`, hi, lo)
			} else {
				fmt.Fprintf(&sb, `\u%04x`, r)
			}
		default:
			sb.Write(out[i : i+size])
		}
		i += size
	}
	return sb.String()
}

// dash is safe(s), or "-" for an empty s.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return safe(s)
}

// describeTxn renders a transaction in a few lines: status, amount and id
// first, then card and error details when there are any.
func describeTxn(t *protocol.Transaction) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %s %s  %s on %s", safe(string(t.Status)), safe(t.ID), safe(t.Amount), safe(t.Currency), safe(t.Type), safe(t.TerminalID))
	if t.Reference != "" {
		fmt.Fprintf(&b, "  ref %s", safe(t.Reference))
	}
	if t.ParentID != "" {
		fmt.Fprintf(&b, "  refund of %s", safe(t.ParentID))
	}
	fmt.Fprintf(&b, "  v%d\n", t.Version)
	if t.AuthCode != "" || t.MaskedPAN != "" || t.ResponseCode != "" {
		var parts []string
		if t.CardScheme != "" || t.MaskedPAN != "" {
			parts = append(parts, strings.TrimSpace(safe(t.CardScheme)+" "+safe(t.MaskedPAN)+" "+safe(t.EntryMode)))
		}
		if t.AuthCode != "" {
			parts = append(parts, "auth "+safe(t.AuthCode))
		}
		if t.RRN != "" {
			parts = append(parts, "rrn "+safe(t.RRN))
		}
		if t.ResponseCode != "" {
			parts = append(parts, "response "+safe(t.ResponseCode))
		}
		fmt.Fprintf(&b, "  card: %s\n", strings.Join(parts, "  "))
	}
	if t.ErrorCode != "" || t.ErrorMessage != "" {
		fmt.Fprintf(&b, "  error: %s", dash(t.ErrorCode))
		if t.ErrorMessage != "" {
			fmt.Fprintf(&b, " (%s)", safe(t.ErrorMessage))
		}
		b.WriteString("\n")
	}
	if t.RefundedAmountMinor > 0 {
		fmt.Fprintf(&b, "  refunded: %s %s\n", protocol.FormatAmount(t.RefundedAmountMinor, t.Currency), safe(t.Currency))
	}
	return b.String()
}

// describeEvent is one line for a durable message about a transaction.
func describeEvent(ev protocol.POSEvent) string {
	t := ev.Transaction
	s := fmt.Sprintf("%s  %s  %s  %s %s on %s  v%d", safe(ev.Action), safe(string(t.Status)), safe(t.ID), safe(t.Amount), safe(t.Currency), safe(t.TerminalID), ev.Version)
	if t.ErrorCode != "" {
		s += "  error " + safe(t.ErrorCode)
	}
	if ev.ReasonCode != "" {
		s += fmt.Sprintf("  reason %s: %s", safe(ev.ReasonCode), safe(ev.Reason))
	}
	if ev.MessageID != "" {
		s += "  (message " + safe(ev.MessageID) + ")"
	}
	return s
}

// describeMessage is one line for any POS WebSocket message.
func describeMessage(m client.Message) string {
	switch m.Action {
	case protocol.ActionConnected:
		var g protocol.POSConnected
		if m.Decode(&g) == nil {
			var ts []string
			for _, t := range g.Terminals {
				ts = append(ts, safe(t.TerminalID)+" "+safe(t.Status))
			}
			list := "-"
			if len(ts) > 0 {
				list = strings.Join(ts, ", ")
			}
			return fmt.Sprintf("connected %s merchant %s; terminals: %s", safe(g.ConnectionID), safe(g.MerchantID), list)
		}
	case protocol.ActionTerminalStatusUpdate:
		var u protocol.TerminalStatusUpdate
		if m.Decode(&u) == nil {
			return fmt.Sprintf("terminal %s %s (was %s) %s", safe(u.TerminalID), safe(u.Status), dash(u.PreviousStatus), safe(u.ConnectionID))
		}
	case protocol.ActionForceDisconnect:
		var fd protocol.ForceDisconnect
		if m.Decode(&fd) == nil {
			return fmt.Sprintf("forceDisconnect %s: %s (reconnect allowed: %v)", safe(fd.Reason), safe(fd.Message), fd.ReconnectAllowed)
		}
	case protocol.ActionError:
		return "error " + safe(m.Err().Error())
	}
	if m.MessageID() != "" {
		var ev protocol.POSEvent
		if m.Decode(&ev) == nil && ev.Transaction != nil {
			return describeEvent(ev)
		}
	}
	return safeJSON(m.Raw)
}
