package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/termhub/termhub/client"
)

// defaultURL is where the command-line tools look for a hub by default: the
// listen address of testdata/demo.yaml.
const defaultURL = "http://127.0.0.1:8080"

const posUsage = `usage: termhub pos COMMAND [flags] [TXN_ID]

A command-line POS: signed REST calls and the POS WebSocket (docs/protocol.md;
docs/simulator.md describes each command).

commands:
  pay --terminal ID (--amount 12.50 | --amount-minor 1250) [--currency USD]
      [--reference R] [--capture manual] [--timeout SECONDS]
      [--wait [--signature accept|decline]]
                            create a sale; --wait follows it to its outcome
                            (at most timeout + 2m, or --wait-timeout)
  status TXN_ID             the transaction as it stands
  refund TXN_ID [--amount 5.00] [--reason R] [--wait]
                            refund all or part of a completed sale
  cancel TXN_ID             cancel a sale before the card is presented
  void TXN_ID [--reason R] [--wait]
                            reverse a completed or authorized sale; --wait
                            waits for the terminal's answer and prints the
                            sale after it (VOIDED, or why not)
  capture TXN_ID [--amount 20.00] [--wait]
                            capture an authorized sale (all of it by default);
                            --wait prints the sale once the terminal answers
  signature TXN_ID (--accept | --decline)
                            answer a terminal's signature prompt
  list [--terminal ID] [--status S] [--reference R] [--type sale|refund]
       [--limit N] [--after CURSOR]
                            transactions, newest first
  terminals                 the merchant's terminals and their status
  watch [--no-ack]          print every POS WebSocket message, acking durable ones
  http METHOD PATH [BODY] [--curl] [--idempotency-key K]
                            any signed request: PATH is the escaped path and
                            query as sent, BODY the exact bytes (JSON for the
                            hub's POSTs); prints the status line and the body,
                            and exits 1 on a 4xx or 5xx. --curl prints the
                            equivalent curl command, signed for now (valid for
                            300 s; a POST only once), instead of sending it

Ctrl-C during a --wait stops the waiting, not the transaction: it prints
how to check the transaction and exits with status 130.

common flags (also after the command's arguments):
  --url URL        hub address (default $TERMHUB_URL or ` + defaultURL + `)
  --key ID         API key id (default $TERMHUB_KEY or pk_demo)
  --secret SECRET  API key secret (default $TERMHUB_SECRET or sk_demo)
  --json           print the hub's raw JSON instead of readable lines

--wait (pay, refund, capture, void) reads the transaction over REST every
200 ms: it opens no WebSocket and acks nothing, so it can run beside a
watch or a POS app on the same key. watch, though, is a WebSocket: the API
key's one POS connection, which displaces any other connection of the same
key, such as a running POS app; give it a key of its own.
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

	// http: the request as given. HasBody tells an empty BODY argument
	// from none.
	Method, Path, Body string
	HasBody            bool
	Curl               bool
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

// posCommands says how many TXN_ID arguments each command takes; http
// (httpArgs) takes METHOD PATH [BODY] instead.
var posCommands = map[string]int{
	"pay": 0, "status": 1, "refund": 1, "cancel": 1, "void": 1, "capture": 1, "signature": 1,
	"list": 0, "terminals": 0, "watch": 0, "http": -1,
}

// parsePOSArgs parses a `termhub pos` command line: the command, then its
// flags and TXN_ID in any order.
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
	a.commandFlags(fs)

	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return a, err
	}
	if a.Cmd == "http" {
		if err := a.httpArgs(pos); err != nil {
			return a, err
		}
	} else if len(pos) != nargs {
		if nargs == 1 {
			return a, fmt.Errorf("pos %s: want one TXN_ID argument, got %d", a.Cmd, len(pos))
		}
		return a, fmt.Errorf("pos %s: unexpected argument %q", a.Cmd, pos[0])
	}
	if nargs == 1 {
		a.TxnID = pos[0]
	}
	err = a.check()
	return a, err
}

// commandFlags registers the flags of a.Cmd on fs, beyond the common ones.
func (a *posArgs) commandFlags(fs *flag.FlagSet) {
	amountFlags := func() {
		fs.StringVar(&a.Amount, "amount", "", "amount as a decimal string, e.g. 12.50")
		fs.Int64Var(&a.AmountMinor, "amount-minor", 0, "amount in minor units, e.g. 1250")
	}
	waitFlags := func() {
		fs.BoolVar(&a.Wait, "wait", false, "follow the transaction until its outcome (reads it over REST: opens no WebSocket)")
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
		waitFlags()
	case "capture":
		amountFlags()
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
		waitFlags()
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
	case "http":
		fs.BoolVar(&a.Curl, "curl", false, "print the equivalent curl command instead of sending")
		fs.StringVar(&a.IdempotencyKey, "idempotency-key", "", "Idempotency-Key header")
	}
}

// check refuses flag combinations a.Cmd cannot run with and fills in
// defaults that depend on other flags.
func (a *posArgs) check() error {
	if a.Amount != "" && a.AmountMinor != 0 {
		return fmt.Errorf("pos %s: give --amount or --amount-minor, not both", a.Cmd)
	}
	if a.AmountMinor < 0 {
		return fmt.Errorf("pos %s: --amount-minor must be positive", a.Cmd)
	}
	switch a.Cmd {
	case "pay":
		if a.Terminal == "" {
			return errors.New("pos pay: --terminal is required")
		}
		if a.Amount == "" && a.AmountMinor == 0 {
			return errors.New("pos pay: --amount or --amount-minor is required")
		}
		if a.Reference == "" {
			a.Reference = newReference()
		}
		a.Currency = strings.ToUpper(a.Currency)
		if a.Signature != "" && a.Signature != "accept" && a.Signature != "decline" {
			return errors.New("pos pay: --signature must be accept or decline")
		}
		if a.Signature != "" && !a.Wait {
			return errors.New("pos pay: --signature only makes sense with --wait")
		}
	case "signature":
		if a.Accept == nil {
			return errors.New("pos signature: --accept or --decline is required")
		}
	}
	if a.URL == "" || a.Key == "" || a.Secret == "" {
		return errors.New("pos: --url, --key and --secret must not be empty")
	}
	return nil
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
