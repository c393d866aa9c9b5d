package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/sim"
)

// terminalFleet is the simulated terminals, in this process, each
// recording into the ledger what it decided, sent and received.
type terminalFleet struct {
	terms []*sim.Terminal
	wg    sync.WaitGroup
}

// startTerminals runs one simulator per credential until ctx ends. Each
// decides by amount (sim.DefaultScript: minor units ending in 05 decline,
// 55 ask for a signature, the amounts the POS picks otherwise approve) with
// a card delay of its own between 100 and 300 ms.
func startTerminals(ctx context.Context, t *testing.T, opts client.Options, creds []credential, led *ledger) *terminalFleet {
	t.Helper()
	f := &terminalFleet{}
	for _, c := range creds {
		device := c.id
		term, err := sim.New(sim.Options{
			Client:    opts,
			DeviceID:  device,
			Secret:    c.secret,
			CardDelay: time.Duration(100+rand.IntN(201)) * time.Millisecond,
			Script: func(sp protocol.StartPayment) sim.Behavior {
				b := sim.DefaultScript(sp)
				led.decided(sp.TransactionID, device, b)
				return b
			},
			OnEvent:           led.addTermEvent,
			ReconnectDelay:    100 * time.Millisecond,
			MaxReconnectDelay: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		f.terms = append(f.terms, term)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			// Run ends by itself only when the hub refuses the terminal
			// for good; that is a finding, and the terminal is needed.
			for ctx.Err() == nil {
				err := term.Run(ctx)
				if err == nil {
					return
				}
				led.note(fmt.Sprintf("%s terminal %s stopped: %v (running it again)", clockTime(time.Now()), device, err))
				if errors.Is(err, sim.ErrUnauthorized) {
					return
				}
				_ = client.SleepContext(ctx, time.Second) // a pause before running it again
			}
		}()
	}
	return f
}

// unacked lists the results the terminals still hold because the hub has
// not acknowledged them (they will be sent again on the next connection).
func (f *terminalFleet) unacked() []string {
	var ids []string
	for _, t := range f.terms {
		ids = append(ids, t.Unacked()...)
	}
	return ids
}

// wait returns once every simulator has stopped (after ctx ended).
func (f *terminalFleet) wait() { f.wg.Wait() }

// parseResult reads a sent paymentResult back from the simulator's event:
// its Detail is "<outcome> [<responseCode>] [auth=<code>] ...".
func parseResult(e sim.Event) termResult {
	r := termResult{at: e.Time}
	fields := strings.Fields(e.Detail)
	if len(fields) > 0 {
		r.outcome = fields[0]
	}
	for _, f := range fields {
		if code, ok := strings.CutPrefix(f, "auth="); ok {
			r.authCode = code
		}
	}
	return r
}
