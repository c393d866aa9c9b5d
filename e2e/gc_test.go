package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/gcfloor"
)

// TestHubCarryingPaymentsCollectsGarbage runs the real binary, as
// `termhub serve` runs in production, carries payments through it and
// reads its /metrics: the hub must collect garbage while it works, with a
// heap goal of tens of MiB, and under memory_limit the GOGC it sets must
// never aim past the limit. A GOGC tuned from the live heap of 0 a fresh
// hub has before its first collection would be 100000, a first goal of
// 4 GiB, and no collection at all for thousands of payments: an OOM kill
// under a container limit below 4 GiB.
//
// The goal checked is the one GOGC alone gives (gogcGoal), not
// go_memstats_next_gc_bytes: the runtime caps the goal it uses at the
// memory limit whatever GOGC is, so that one is under the limit even when
// internal/gcfloor ignores it. The limit is the lowest memory_limit allows,
// 64 MiB, which a GOGC tuned for Headroom (64 MiB above the live heap)
// without regard to the limit passes once the hub's live heap is about
// 3.5 MiB or more (live + (live + stacks + globals) × 16 > 64 MiB). That
// hub runs on the embedded Redis, which keeps every transaction in the
// hub's heap, so that the live heap grows past that within a few rounds of
// payments, whether or not REDIS_URL is set; the test goes on until it has
// checked such a heap twice (and two collections have run).
func TestHubCarryingPaymentsCollectsGarbage(t *testing.T) {
	for _, c := range []struct {
		name     string
		env      []string
		limit    float64 // go_gc_gomemlimit_bytes expected; 0: none
		embedded bool    // on the embedded Redis even when REDIS_URL is set
	}{
		{"no limit", nil, 0, false},
		// The file's setting (here from its environment override) and
		// GOMEMLIMIT: the lower applies.
		{"memory_limit", []string{"TERMHUB_MEMORY_LIMIT=64MiB", "GOMEMLIMIT=1GiB"}, 64 * gcMiB, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := append([]string{
				"TERMHUB_OPS_TOKEN=gc-test-token", "GOGC=", "GOMEMLIMIT=",
				// Thousands of payments a second from one key and terminal.
				"TERMHUB_RATE_LIMIT_KEY_RATE=1000000", "TERMHUB_RATE_LIMIT_KEY_BURST=1000000",
				"TERMHUB_RATE_LIMIT_TERMINAL_RATE=1000000", "TERMHUB_RATE_LIMIT_TERMINAL_BURST=1000000",
			}, c.env...)
			// A real Redis when there is one; the embedded one (in the
			// hub's process, so more garbage per payment and a live heap
			// that grows with the transactions kept) otherwise.
			url := os.Getenv("REDIS_URL")
			if c.embedded {
				url = ""
				env = append(env, "REDIS_URL=", "TERMHUB_REDIS_URL=") // the hub reads them too
			}
			p := startProcessHubOn(t, url, kit.Config, env...)
			m := checkGOGCGoal(t, p, "a fresh hub", c.limit)
			t.Logf("fresh hub: GOGC %v, next GC at %.1f MiB, memory limit %v", m["go_gc_gogc_percent"], m["go_memstats_next_gc_bytes"]/gcMiB, m["go_gc_gomemlimit_bytes"])
			if c.limit > 0 && m["go_gc_gomemlimit_bytes"] != c.limit {
				t.Fatalf("go_gc_gomemlimit_bytes %v, want %v", m["go_gc_gomemlimit_bytes"], c.limit)
			}
			if g := m["go_memstats_next_gc_bytes"]; c.limit == 0 && g > 256*gcMiB { // Headroom above a live heap of a few MiB, with room to spare
				t.Fatalf("a fresh hub's next collection is at %.0f MiB (GOGC %v), want at most 256 MiB", g/gcMiB, m["go_gc_gogc_percent"])
			}

			pairs := [][2]string{{"pk1", "T1"}, {"pk1b", "T2"}, {"pk2", "U1"}}
			conns := make([][2]*client.Conn, len(pairs))
			for i, pr := range pairs {
				conns[i] = [2]*client.Conn{dialPOS(t, p, pr[0]), dialTerminal(t, p, pr[1])}
			}
			// Rounds of payments, the goal checked after each, until the
			// hub has collected twice and (under the limit) the goal was
			// checked twice on a live heap large enough for the check to
			// matter. A failure: 512 MiB allocated without a collection
			// (with a real Redis a collection comes every ~2,300 payments
			// of ~28 KiB each, on the embedded one every ~150), or 2 GiB
			// without the rest.
			payments, perRound, telling := 0, 150, 0
			for round := 0; ; round++ {
				cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var wg sync.WaitGroup
				errs := make([]error, len(pairs))
				for i, pr := range pairs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[i] = carryPayments(cctx, conns[i][0], conns[i][1], pr[1], fmt.Sprintf("gc-%d-%d", round, i), perRound)
					}()
				}
				wg.Wait()
				cancel()
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				payments += perRound * len(pairs)
				m = checkGOGCGoal(t, p, fmt.Sprintf("after %d payments", payments), c.limit)
				if c.limit > 0 && m["go_gc_duration_seconds_count"] >= 1 && limitIgnoredGoal(m) > c.limit {
					telling++ // gcfloor ignoring the limit would have failed this check
				}
				if m["go_gc_duration_seconds_count"] >= 2 && (c.limit == 0 || telling >= 2) {
					break
				}
				if alloc := m["go_memstats_alloc_bytes_total"]; alloc > 2048*gcMiB || (alloc > 512*gcMiB && m["go_gc_duration_seconds_count"] == 0) {
					t.Fatalf("%.0f MiB allocated over %d payments and %v collections (next at %.0f MiB, GOGC %v, live heap %.1f MiB); %d checks on a live heap that tells",
						m["go_memstats_alloc_bytes_total"]/gcMiB, payments, m["go_gc_duration_seconds_count"], m["go_memstats_next_gc_bytes"]/gcMiB, m["go_gc_gogc_percent"],
						m["go_gc_heap_live_bytes"]/gcMiB, telling)
				}
			}
			t.Logf("after %d payments: %v collections, %.0f MiB allocated, next GC at %.1f MiB, GOGC %v (its goal %.1f MiB), live heap %.1f MiB, heap in use %.1f MiB, RSS %.1f MiB; %d telling checks",
				payments, m["go_gc_duration_seconds_count"], m["go_memstats_alloc_bytes_total"]/gcMiB, m["go_memstats_next_gc_bytes"]/gcMiB,
				m["go_gc_gogc_percent"], gogcGoal(m)/gcMiB, m["go_gc_heap_live_bytes"]/gcMiB, m["go_memstats_heap_inuse_bytes"]/gcMiB, m["process_resident_memory_bytes"]/gcMiB, telling)
		})
	}
}

const gcMiB = 1 << 20

// gogcGoal is the heap goal GOGC alone gives, from the hub's /metrics: the
// runtime's formula (as internal/gcfloor's tests compute it),
//
//	goal = live + (live + stacks + globals) × GOGC/100, at least 4 MiB × GOGC/100,
//
// live being the heap the last collection left marked (0 before the first).
func gogcGoal(m map[string]float64) float64 {
	percent := m["go_gc_gogc_percent"]
	live, roots := m["go_gc_heap_live_bytes"], m["go_gc_scan_stack_bytes"]+m["go_gc_scan_globals_bytes"]
	return max(live+(live+roots)*percent/100, 4*gcMiB*percent/100)
}

// limitIgnoredGoal is the goal gcfloor would set on the live heap of m if it
// ignored the memory limit (Headroom above the live heap): a check of
// gogcGoal against the limit catches that only when this is above it.
func limitIgnoredGoal(m map[string]float64) float64 {
	live, roots := uint64(m["go_gc_heap_live_bytes"]), uint64(m["go_gc_scan_stack_bytes"]+m["go_gc_scan_globals_bytes"])
	n := maps.Clone(m)
	n["go_gc_gogc_percent"] = float64(gcfloor.Percent(live, roots, gcfloor.Headroom))
	return gogcGoal(n)
}

// checkGOGCGoal scrapes the hub's /metrics and checks the goal GOGC gives
// while gcfloor has GOGC above the default: at most the memory limit, and
// (with none) at most Headroom above the live heap. At GOGC 100 it is the
// runtime's limit, not gcfloor, that bounds the goal. gcfloor sets GOGC in
// a finalizer that runs just after each collection, so a scrape between
// the two sees the new live heap with the GOGC set for the previous one:
// a goal out of bounds is read again a few times before it fails.
func checkGOGCGoal(t *testing.T, p *hubProcess, when string, limit float64) map[string]float64 {
	t.Helper()
	var m map[string]float64
	for try := 0; ; try++ {
		m = scrapeMetrics(t, p)
		for _, name := range []string{"go_gc_gogc_percent", "go_gc_heap_live_bytes", "go_gc_scan_stack_bytes", "go_gc_scan_globals_bytes"} {
			if _, ok := m[name]; !ok {
				t.Fatalf("/metrics has no %s", name)
			}
		}
		percent, live, g := m["go_gc_gogc_percent"], m["go_gc_heap_live_bytes"], gogcGoal(m)
		bound, what := live+gcfloor.Headroom, "more than Headroom above the live heap"
		if limit > 0 {
			bound, what = limit, "past the memory limit"
		}
		if percent <= 100 || g <= bound {
			return m
		}
		if try == 4 {
			t.Fatalf("%s: GOGC %v on a live heap of %.1f MiB (stacks and globals %.2f MiB) aims the next collection at %.1f MiB, %s (%.0f MiB); go_memstats_next_gc_bytes %.1f MiB",
				when, percent, live/gcMiB, (m["go_gc_scan_stack_bytes"]+m["go_gc_scan_globals_bytes"])/gcMiB, g/gcMiB, what, bound/gcMiB, m["go_memstats_next_gc_bytes"]/gcMiB)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// carryPayments runs n approved sales from pos on terminal, one after the
// other, acknowledging each paymentComplete as a POS does.
func carryPayments(ctx context.Context, pos, term *client.Conn, terminal, tag string, n int) error {
	for i := range n {
		ref := tag + "-" + strconv.Itoa(i)
		if err := pos.Send(ctx, map[string]any{"action": "payment", "terminalId": terminal, "amountMinor": 1250, "currency": "USD", "reference": ref}); err != nil {
			return fmt.Errorf("%s: payment: %w", ref, err)
		}
		var resp struct {
			Transaction struct {
				ID string `json:"id"`
			} `json:"transaction"`
		}
		for {
			m, err := pos.Read(ctx)
			if err != nil {
				return fmt.Errorf("%s: paymentResponse: %w", ref, err)
			}
			if e := m.Err(); e != nil {
				return fmt.Errorf("%s: refused: %v", ref, e)
			}
			if m.Action == "paymentResponse" {
				if err := m.Decode(&resp); err != nil || resp.Transaction.ID == "" {
					return fmt.Errorf("%s: paymentResponse %s: %v", ref, m.Raw, err)
				}
				break
			}
		}
		id := resp.Transaction.ID
		if _, err := term.ReadUntil(ctx, "startPayment"); err != nil {
			return fmt.Errorf("%s: startPayment: %w", ref, err)
		}
		if err := term.Send(ctx, map[string]any{"action": "commandReceived", "transactionId": id}); err != nil {
			return err
		}
		if err := term.Send(ctx, map[string]any{"action": "paymentResult", "transactionId": id, "outcome": "approved",
			"authCode": "A1B2C3", "cardScheme": "visa", "maskedPan": "424242******4242", "entryMode": "contactless"}); err != nil {
			return err
		}
		if _, err := term.ReadUntil(ctx, "resultAck"); err != nil {
			return fmt.Errorf("%s: resultAck: %w", ref, err)
		}
		done, err := pos.ReadUntil(ctx, "paymentComplete")
		if err != nil {
			return fmt.Errorf("%s: paymentComplete: %w", ref, err)
		}
		if err := pos.Ack(ctx, done.MessageID()); err != nil {
			return err
		}
	}
	return nil
}

// scrapeMetrics reads the hub's /metrics: every series without labels by
// name.
func scrapeMetrics(t *testing.T, p *hubProcess) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer gc-test-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			m[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}
