package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/redisproc"
	"github.com/termhub/termhub/protocol"
)

// Size of the system under test: one merchant.
const (
	posCount      = 3
	terminalCount = 12
)

// credential is an id and its secret: an API key or a terminal.
type credential struct{ id, secret string }

func credentials(idFormat, secretFormat string, n int) []credential {
	cs := make([]credential, n)
	for i := range cs {
		cs[i] = credential{fmt.Sprintf(idFormat, i+1), fmt.Sprintf(secretFormat, i+1)}
	}
	return cs
}

// TestChaos runs payments through the real binary while Redis and the hub
// are broken on a schedule, lets everything end, and checks that nothing
// was lost, doubled, left unfinished or charged without the merchant
// knowing (see the package comment). It runs only with TERMHUB_CHAOS=1.
func TestChaos(t *testing.T) {
	if os.Getenv("TERMHUB_CHAOS") != "1" {
		t.Skip("the chaos run takes minutes: TERMHUB_CHAOS=1 (make chaos) runs it")
	}
	rounds := envInt(t, "TERMHUB_CHAOS_ROUNDS", 20)
	minutes := envFloat(t, "TERMHUB_CHAOS_MINUTES", 10)
	began := time.Now()

	sys := startSystem(t)
	defer sys.stop()

	t.Logf("%s payments and %d fault rounds over %.1f min", clockTime(time.Now()), rounds, minutes)
	faultsBegan := time.Now()
	inj := sys.paymentsUnderFaults(rounds, time.Duration(minutes*float64(time.Minute)))
	faulted := time.Since(faultsBegan)

	// Settle: no new payments, the clients still connected.
	settleBegan := time.Now()
	settleFor := paymentTimeout + gracePeriod + signatureTimeout + 90*time.Second
	t.Logf("%s settling (at most %s)", clockTime(time.Now()), settleFor)
	view, s, v, err := settle(sys.ctx, sys.api, sys.led, sys.fleet, time.Now().Add(settleFor))
	if err != nil {
		t.Errorf("the hub's API did not answer at the end of the settle wait: %v (the figures below count every transaction as stuck)", err)
	}
	facts := sys.facts(inj, s)
	facts.total, facts.faulted, facts.settled = time.Since(began), faulted, time.Since(settleBegan)
	t.Logf("chaos figures:\n%s", report(view, s, v, facts))

	for _, r := range inj.wedged() {
		t.Errorf("the hub did not recover by itself from a fault (docs/ops.md#when-redis-stalls-restarts-or-fails-over): %s", r)
	}
	if v.failed() {
		t.Errorf("chaos checks failed; offending transactions:%s", offenders(view, s, v))
	}
	if t.Failed() {
		kept, err := sys.hub.keepLog()
		if err != nil {
			kept = "not kept: " + err.Error()
		}
		t.Logf("hub log (kept as %s), last lines:\n%s", kept, sys.hub.logTail(40))
	}
}

// system is everything a run drives: Redis, the hub, the terminals and the
// POS clients, all recording into one ledger.
type system struct {
	t      *testing.T
	ctx    context.Context
	cancel context.CancelFunc
	redis  *redisproc.Server
	hub    *hubProcess
	led    *ledger
	faults *faultClock
	fleet  *terminalFleet
	pos    []*posClient
	api    *client.HTTP // REST as the first key, for the settle wait
	terms  []string
	wg     sync.WaitGroup // the POS clients and the hub's supervisor
}

// startSystem starts Redis and the hub (built from ./cmd/termhub unless
// TERMHUB_CHAOS_BIN names a binary), then the terminals and the POS
// clients, and returns once every terminal is online.
func startSystem(t *testing.T) *system {
	t.Helper()
	bin := os.Getenv("TERMHUB_CHAOS_BIN")
	if bin == "" {
		bin = buildHub(t, t.TempDir())
	}
	t.Logf("hub binary: %s", bin)
	rds := redisproc.Start(t, redisproc.Options{AppendOnly: true, Fsync: "always"})
	t.Logf("redis: %s (dir %s)", rds.URL(), rds.Dir)
	keys := credentials("pk_chaos%d", "sk_chaos%d", posCount)
	terms := credentials("T%02d", "dk_t%02d", terminalCount)

	sys := &system{t: t, redis: rds, led: newLedger(), faults: &faultClock{}}
	sys.hub = newHub(t, bin, rds.URL(), keys, terms)
	sys.ctx, sys.cancel = context.WithCancel(context.Background())
	sys.wg.Add(1)
	go func() { defer sys.wg.Done(); sys.hub.supervise(sys.ctx) }()
	sys.fleet = startTerminals(sys.ctx, t, sys.hub.opts(), terms, sys.led)
	for _, c := range terms {
		sys.terms = append(sys.terms, c.id)
	}
	for _, k := range keys {
		p := newPOS(sys.hub.opts(), k, sys.led, sys.faults)
		sys.pos = append(sys.pos, p)
		sys.wg.Add(1)
		go func() { defer sys.wg.Done(); p.run(sys.ctx) }()
	}
	sys.api = client.NewHTTP(sys.hub.opts(), keys[0].id, keys[0].secret)
	if err := waitOnline(sys.api, len(terms)); err != nil {
		sys.stop()
		t.Fatal(err)
	}
	return sys
}

// stop ends the clients and waits for them; the hub and Redis end with the
// test.
func (sys *system) stop() {
	sys.cancel()
	sys.fleet.wait()
	sys.wg.Wait()
}

// paymentsUnderFaults has every POS make payments while the fault rounds
// play, then stops making new ones and waits for those in flight to get
// their answers.
func (sys *system) paymentsUnderFaults(rounds int, total time.Duration) *faultInjector {
	creating, stopCreating := context.WithCancel(sys.ctx)
	var makers sync.WaitGroup
	runID := "chaos-" + randomHex(3)
	for _, p := range sys.pos {
		makers.Add(1)
		go func() { defer makers.Done(); p.makePayments(sys.ctx, creating, runID, sys.terms) }()
	}
	inj := &faultInjector{t: sys.t, redis: sys.redis, hub: sys.hub, clock: sys.faults}
	inj.run(sys.ctx, rounds, total)
	stopCreating()
	makers.Wait()
	return inj
}

// facts gathers the counts the report shows besides the checks.
func (sys *system) facts(inj *faultInjector, s seen) runFacts {
	starts, failedStarts := sys.hub.counts()
	f := runFacts{
		rounds: inj.counts(), hubStarts: starts, failedStarts: failedStarts, hubExits: sys.hub.unexpectedExits(),
		posConnects: map[string]int{}, unacked: sys.fleet.unacked(), dropsBy: map[string]int{},
	}
	for _, p := range sys.pos {
		f.posConnects[p.key] = p.connections()
	}
	for _, d := range s.drops {
		kind := inj.during(d.at)
		f.dropsBy[kind]++
		if kind == redisStall.String() || kind == redisKill.String() {
			f.redisDrops = append(f.redisDrops, fmt.Sprintf("%s %s (%s)", clockTime(d.at), d.who, kind))
		}
	}
	return f
}

// waitOnline polls GET /v1/terminals until n terminals are online, for at
// most 30 s.
func waitOnline(api *client.HTTP, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var body struct {
			Data []protocol.TerminalInfo `json:"data"`
		}
		online := 0
		if _, err := getJSON(context.Background(), api, "/v1/terminals", &body); err == nil {
			for _, ti := range body.Data {
				if ti.Status == protocol.TerminalOnline {
					online++
				}
			}
		}
		if online == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d terminals online after 30s", online, n)
		}
		time.Sleep(100 * time.Millisecond) // polling the hub
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return f
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
