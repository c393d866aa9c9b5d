package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
)

// TestHubCarryingPaymentsCollectsGarbage runs the real binary, as
// `termhub serve` runs in production, carries payments through it and
// reads its /metrics: the hub must collect garbage while it works, with a
// heap goal of tens of MiB, and under memory_limit never above the limit.
// The hub used to tune GOGC from the live heap of 0 it had before its first
// collection: GOGC 100000, a first goal of 4 GiB (go_memstats_next_gc_bytes
// 4.19e9 on a fresh hub), and no collection at all for thousands of
// payments: an OOM kill under a container limit below 4 GiB.
func TestHubCarryingPaymentsCollectsGarbage(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name  string
		env   []string
		limit float64 // go_gc_gomemlimit_bytes expected; 0: none
	}{
		{"no limit", nil, 0},
		// The file's setting (here from its environment override) and
		// GOMEMLIMIT: the lower applies.
		{"memory_limit", []string{"TERMHUB_MEMORY_LIMIT=80MiB", "GOMEMLIMIT=1GiB"}, 80 * mib},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := append([]string{
				"TERMHUB_OPS_TOKEN=gc-test-token", "GOGC=", "GOMEMLIMIT=",
				// Thousands of payments a second from one key and terminal.
				"TERMHUB_RATE_LIMIT_KEY_RATE=1000000", "TERMHUB_RATE_LIMIT_KEY_BURST=1000000",
				"TERMHUB_RATE_LIMIT_TERMINAL_RATE=1000000", "TERMHUB_RATE_LIMIT_TERMINAL_BURST=1000000",
			}, c.env...)
			// A real Redis when there is one; the embedded one (in the
			// hub's process, so more garbage per payment) otherwise.
			p := startProcessHubOn(t, os.Getenv("REDIS_URL"), testConfig, env...)
			m := scrapeMetrics(t, p)
			t.Logf("fresh hub: GOGC %v, next GC at %.1f MiB, memory limit %v", m["go_gc_gogc_percent"], m["go_memstats_next_gc_bytes"]/mib, m["go_gc_gomemlimit_bytes"])
			maxGoal := 256.0 * mib // Headroom (64 MiB) above a live heap of a few MiB, with room to spare
			if c.limit > 0 {
				maxGoal = c.limit
				if m["go_gc_gomemlimit_bytes"] != c.limit {
					t.Fatalf("go_gc_gomemlimit_bytes %v, want %v", m["go_gc_gomemlimit_bytes"], c.limit)
				}
			}
			if g := m["go_memstats_next_gc_bytes"]; g > maxGoal {
				t.Fatalf("a fresh hub's next collection is at %.0f MiB (GOGC %v), want at most %.0f MiB", g/mib, m["go_gc_gogc_percent"], maxGoal/mib)
			}

			pairs := [][2]string{{"pk1", "T1"}, {"pk1b", "T2"}, {"pk2", "U1"}}
			conns := make([][2]*client.Conn, len(pairs))
			for i, pr := range pairs {
				conns[i] = [2]*client.Conn{dialPOS(t, p, pr[0]), dialTerminal(t, p, pr[1])}
			}
			// Rounds of payments until the hub has collected, or has
			// allocated 512 MiB without doing so (a failure): with a real
			// Redis about 2,300 payments of ~28 KiB each.
			payments, perRound := 0, 150
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
				m = scrapeMetrics(t, p)
				if g := m["go_memstats_next_gc_bytes"]; g > maxGoal {
					t.Fatalf("after %d payments the next collection is at %.0f MiB (GOGC %v), want at most %.0f MiB", payments, g/mib, m["go_gc_gogc_percent"], maxGoal/mib)
				}
				if m["go_gc_duration_seconds_count"] >= 1 {
					break
				}
				if m["go_memstats_alloc_bytes_total"] > 512*mib {
					t.Fatalf("%.0f MiB allocated over %d payments and %v collections (next at %.0f MiB, GOGC %v)",
						m["go_memstats_alloc_bytes_total"]/mib, payments, m["go_gc_duration_seconds_count"], m["go_memstats_next_gc_bytes"]/mib, m["go_gc_gogc_percent"])
				}
			}
			t.Logf("after %d payments: %v collections, %.0f MiB allocated, next GC at %.1f MiB, GOGC %v, heap in use %.1f MiB, RSS %.1f MiB",
				payments, m["go_gc_duration_seconds_count"], m["go_memstats_alloc_bytes_total"]/mib, m["go_memstats_next_gc_bytes"]/mib,
				m["go_gc_gogc_percent"], m["go_memstats_heap_inuse_bytes"]/mib, m["process_resident_memory_bytes"]/mib)
		})
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
