package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/sim"
)

const simUsage = `usage: termhub sim [flags]

Runs simulated card terminals against a hub until interrupted, printing one
line per event. What a sale does depends on the last two digits of its
amount in minor units: 05 declines, 51 declines (insufficient funds), 91
fails (terminal_error), 55 asks for a signature, 99 never answers, 77 drops
the connection mid-payment and comes back; anything else approves.
Refunds always approve. See docs/simulator.md.

flags:
`

// simArgs is a parsed `termhub sim` command line.
type simArgs struct {
	URL         string
	Terminals   []simTerminal
	CardDelay   time.Duration
	SlowCard    bool
	ReturnDelay time.Duration
	Behavior    string // force every payment's behaviour; "" = by amount
	JSON        bool
}

type simTerminal struct{ ID, Secret string }

// runSimCommand is `termhub sim`: it runs until SIGINT or SIGTERM.
func runSimCommand(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return escapeError(simMain(ctx, args, os.Getenv, os.Stdout, os.Stderr))
}

func simMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	a, err := parseSimArgs(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return runSimulators(ctx, a, stdout)
}

func parseSimArgs(args []string, getenv func(string) string, stderr io.Writer) (simArgs, error) {
	var a simArgs
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, simUsage); fs.PrintDefaults() }
	urlFlag := fs.String("url", "", "hub address (default $TERMHUB_URL, else the --config file's listen address, else http://127.0.0.1:8080)")
	fs.Func("terminal", "a terminal as DEVICE_ID:SECRET (repeatable)", func(v string) error {
		id, secret, ok := strings.Cut(v, ":")
		if !ok || id == "" || secret == "" {
			return errors.New("want DEVICE_ID:SECRET")
		}
		a.Terminals = append(a.Terminals, simTerminal{ID: id, Secret: secret})
		return nil
	})
	cfgPath := fs.String("config", "", "hub configuration file: simulate every terminal of every merchant in it")
	fs.DurationVar(&a.CardDelay, "card-delay", sim.DefaultCardDelay, "time between commandReceived, paymentProgress and the result")
	fs.BoolVar(&a.SlowCard, "slow-card", false, fmt.Sprintf("card delay ×%d and extra pin_entry and processing stages", sim.SlowCardFactor))
	fs.DurationVar(&a.ReturnDelay, "return-delay", sim.DefaultReturnDelay, "how long an amount ending in 77 keeps the terminal away")
	fs.StringVar(&a.Behavior, "behavior", "", "force one behaviour for every sale: approve, decline, insufficient_funds, terminal_error, signature, no_answer, drop_and_return")
	fs.BoolVar(&a.JSON, "json", false, "print events as JSON lines")
	if err := fs.Parse(args); err != nil {
		return a, err
	}
	if fs.NArg() > 0 {
		return a, fmt.Errorf("sim: unexpected argument %q (terminals are given with --terminal ID:SECRET)", fs.Arg(0))
	}
	if a.Behavior != "" {
		if _, err := sim.ParseBehavior(a.Behavior); err != nil {
			return a, err
		}
	}
	listen := ""
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath, getenv)
		if err != nil {
			return a, err
		}
		listen = cfg.Listen
		for _, m := range cfg.Merchants {
			for _, t := range m.Terminals {
				a.Terminals = append(a.Terminals, simTerminal{ID: t.DeviceID, Secret: t.Secret})
			}
		}
	}
	if len(a.Terminals) == 0 {
		return a, errors.New("sim: no terminals: give --terminal DEVICE_ID:SECRET or --config FILE")
	}
	seen := map[string]bool{}
	for _, t := range a.Terminals {
		if seen[t.ID] {
			return a, fmt.Errorf("sim: terminal %s given twice (two simulators of one device would displace each other)", t.ID)
		}
		seen[t.ID] = true
	}
	switch {
	case *urlFlag != "":
		a.URL = *urlFlag
	case getenv("TERMHUB_URL") != "":
		a.URL = getenv("TERMHUB_URL")
	case listen != "":
		a.URL = urlForListen(listen)
	default:
		a.URL = defaultURL
	}
	return a, nil
}

// urlForListen turns a listen address into a URL a client can dial: an
// unspecified host (":8080", "0.0.0.0:8080") means this machine.
func urlForListen(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// formatEvent is the line printed for e: a JSON object, or the time and
// the event's text. What the hub sent (an error message, say) is escaped
// (safe, safeJSON) so that it cannot act on the operator's terminal.
func formatEvent(e sim.Event, asJSON bool) string {
	if asJSON {
		b, _ := json.Marshal(e)
		return safeJSON(b)
	}
	return e.Time.Format("15:04:05.000") + " " + safe(e.String())
}

// runSimulators runs every terminal until ctx ends. A terminal whose Run
// fails (bad credentials, displaced) is reported and the others go on.
func runSimulators(ctx context.Context, a simArgs, out io.Writer) error {
	var mu sync.Mutex // one line at a time
	printEvent := func(e sim.Event) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(out, formatEvent(e, a.JSON))
	}
	cardDelay := a.CardDelay
	if cardDelay == 0 {
		cardDelay = -1 // sim.Options: zero means the default, negative none
	}
	returnDelay := a.ReturnDelay
	if returnDelay == 0 {
		returnDelay = -1
	}
	var script func(protocol.StartPayment) sim.Behavior
	if a.Behavior != "" {
		b, _ := sim.ParseBehavior(a.Behavior)
		script = func(sp protocol.StartPayment) sim.Behavior {
			if sp.Type == protocol.TypeRefund {
				return sim.Approve
			}
			return b
		}
	}
	terms := make([]*sim.Terminal, 0, len(a.Terminals))
	for _, t := range a.Terminals {
		term, err := sim.New(sim.Options{
			Client:   client.Options{BaseURL: a.URL},
			DeviceID: t.ID, Secret: t.Secret,
			CardDelay: cardDelay, SlowCard: a.SlowCard, ReturnDelay: returnDelay,
			Script: script, OnEvent: printEvent,
		})
		if err != nil {
			return err
		}
		terms = append(terms, term)
	}
	mu.Lock()
	if !a.JSON {
		fmt.Fprintf(out, "simulating %d terminal(s) against %s (card delay %s); Ctrl-C to stop\n", len(terms), safe(a.URL), a.CardDelay)
	}
	mu.Unlock()

	errs := make([]error, len(terms))
	var wg sync.WaitGroup
	for i, term := range terms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := term.Run(ctx); err != nil {
				errs[i] = err
				printEvent(sim.Event{Time: time.Now(), DeviceID: term.DeviceID(), Kind: "stopped", Detail: err.Error()})
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
