package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/termhub/termhub/client"
)

// IdleStats is the idle-memory scenario's result.
type IdleStats struct {
	Connections int
	RSSBefore   int64 // bytes, before the first connection
	RSSAfter    int64 // bytes, with every connection open
	PerConn     int64 // bytes per connection
	Connect     time.Duration
	// From the hub's Go runtime metrics (/metrics), per connection, when
	// the bench knows the ops token: where the bytes are.
	Runtime *RuntimeDelta
}

// RuntimeDelta is the growth of the hub's Go runtime figures per
// connection.
type RuntimeDelta struct {
	Goroutines float64
	StackBytes float64 // go_memstats_stack_inuse_bytes
	HeapBytes  float64 // go_memstats_heap_inuse_bytes
}

// settleRSS reads the process's RSS every 250 ms until two reads in a row
// differ by less than 0.5 % (at most 5 s), so that a figure is not taken
// in the middle of a burst of allocation.
func settleRSS(p *Proc) (int64, error) {
	prev, err := p.RSS()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		cur, err := p.RSS()
		if err != nil {
			return 0, err
		}
		d := cur - prev
		if d < 0 {
			d = -d
		}
		if d*200 < cur {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

// idleConns opens one terminal connection per credential, dialWidth at a
// time, and leaves them idle.
func idleConns(ctx context.Context, ep Endpoint, creds []Cred) ([]*client.Conn, error) {
	conns := make([]*client.Conn, len(creds))
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err := parallel(len(creds), dialWidth, func(i int) error {
		c, err := client.DialTerminal(dctx, ep.opts(), creds[i].ID, creds[i].Secret)
		if err != nil {
			return fmt.Errorf("dial terminal %s (%d open): %w", creds[i].ID, i, err)
		}
		conns[i] = c
		return nil
	})
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*client.Conn) {
	_ = parallel(len(conns), dialWidth, func(i int) error {
		if conns[i] != nil {
			_ = conns[i].CloseNow()
		}
		return nil
	})
}

// Idle opens len(creds) idle terminal connections and measures how much the
// server's RSS grows per connection. It returns the connections, still
// open, for the storm.
func Idle(ctx context.Context, ep Endpoint, creds []Cred) (IdleStats, []*client.Conn, error) {
	st := IdleStats{Connections: len(creds)}
	if ep.Proc == nil {
		return st, nil, fmt.Errorf("bench: idle memory needs the hub's process (start it from the bench, or pass --hub-pid)")
	}
	var err error
	if st.RSSBefore, err = settleRSS(ep.Proc); err != nil {
		return st, nil, err
	}
	rtBefore, rtErr := ep.runtimeMetrics(ctx)
	start := time.Now()
	conns, err := idleConns(ctx, ep, creds)
	if err != nil {
		return st, nil, err
	}
	st.Connect = time.Since(start)
	if st.RSSAfter, err = settleRSS(ep.Proc); err != nil {
		closeAll(conns)
		return st, nil, err
	}
	if len(creds) > 0 {
		st.PerConn = (st.RSSAfter - st.RSSBefore) / int64(len(creds))
		if rtAfter, err := ep.runtimeMetrics(ctx); err == nil && rtErr == nil {
			n := float64(len(creds))
			st.Runtime = &RuntimeDelta{
				Goroutines: (rtAfter["go_goroutines"] - rtBefore["go_goroutines"]) / n,
				StackBytes: (rtAfter["go_memstats_stack_inuse_bytes"] - rtBefore["go_memstats_stack_inuse_bytes"]) / n,
				HeapBytes:  (rtAfter["go_memstats_heap_inuse_bytes"] - rtBefore["go_memstats_heap_inuse_bytes"]) / n,
			}
		}
	}
	return st, conns, nil
}

// StormStats is the reconnect storm's result.
type StormStats struct {
	Terminals  int
	AllOnline  time.Duration // from the first reconnect attempt to the last greeting
	Handshake  Summary       // dial → greeting of each successful attempt
	Retries    int           // attempts that failed and were retried
	Failed     int           // terminals not back at the end
	FirstError string
}

// Storm drops every connection in conns at once (without a close
// handshake, as a network failure would) and reconnects every terminal at
// once, each retrying a failed attempt after 100 ms × attempt (at most 10
// attempts, as a terminal with backoff would). The returned connections
// are open.
func Storm(ctx context.Context, ep Endpoint, conns []*client.Conn, creds []Cred) (StormStats, []*client.Conn, error) {
	st := StormStats{Terminals: len(creds)}
	closeAll(conns)
	out := make([]*client.Conn, len(creds))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		rec     Recorder
		lastAt  time.Time
		errText string
	)
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	for i, cr := range creds {
		wg.Go(func() {
			for attempt := 1; attempt <= 10; attempt++ {
				t0 := time.Now()
				actx, acancel := context.WithTimeout(dctx, 30*time.Second)
				c, err := client.DialTerminal(actx, ep.opts(), cr.ID, cr.Secret)
				acancel()
				if err == nil {
					now := time.Now()
					rec.Add(now.Sub(t0))
					mu.Lock()
					out[i] = c
					if now.After(lastAt) {
						lastAt = now
					}
					mu.Unlock()
					return
				}
				mu.Lock()
				st.Retries++
				if errText == "" {
					errText = err.Error()
				}
				mu.Unlock()
				if dctx.Err() != nil {
					break
				}
				select {
				case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
				case <-dctx.Done():
				}
			}
			mu.Lock()
			st.Failed++
			mu.Unlock()
		})
	}
	wg.Wait()
	st.Handshake = rec.Summary()
	st.AllOnline = lastAt.Sub(start)
	st.FirstError = errText
	return st, out, nil
}

// ReplayStats is the replay scenario's result.
type ReplayStats struct {
	Messages     int           // unacknowledged durable messages waiting
	Received     int           // durable messages received after the reconnect
	Duplicates   int           // received twice (a stream id not above the previous)
	FromDial     time.Duration // from the start of the reconnect to the last message
	FromGreeting time.Duration // from the greeting to the last message
	Fill         PaymentStats  // the payments that produced the messages
}

// Replay makes n durable messages wait for one API key (payments through
// terminals of its merchant, with the POS never acknowledging), drops the
// POS and times its reconnect until the last message has arrived.
func Replay(ctx context.Context, ep Endpoint, n, terminals int, tag string) (ReplayStats, error) {
	st := ReplayStats{}
	plans, err := ep.Fleet.Plan(1, terminals)
	if err != nil {
		return st, err
	}
	fc, err := connect(ctx, ep, plans, tag)
	if err != nil {
		return st, err
	}
	defer fc.close()
	d := fc.drivers[0]
	d.mu.Lock()
	d.noAck = true
	d.mu.Unlock()
	// Each payment leaves two durable messages (DISPATCHED, COMPLETED).
	st.Fill = fc.closedLoop(ctx, "fill", int64((n+1)/2), 0, 30*time.Second)
	d.mu.Lock()
	st.Messages = d.mids
	d.mu.Unlock()
	if st.Fill.Completed == 0 {
		return st, fmt.Errorf("bench: replay: no payment completed while filling (%s)", st.Fill.ErrorList())
	}
	_ = d.getConn().CloseNow()

	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	c, err := client.DialPOS(rctx, ep.opts(), d.key.ID, d.key.Secret)
	if err != nil {
		return st, fmt.Errorf("bench: replay: reconnect: %w", err)
	}
	defer c.CloseNow()
	tg := time.Now()
	last := ""
	var lastAt time.Time
	for st.Received+st.Duplicates < st.Messages {
		b, err := c.ReadRaw(rctx)
		if err != nil {
			return st, fmt.Errorf("bench: replay: %d of %d messages received: %w", st.Received, st.Messages, err)
		}
		mid := jsonStr(b, "messageId")
		if mid == "" || !strings.HasPrefix(string(b), `{"messageId"`) {
			continue
		}
		lastAt = time.Now()
		if last != "" && !idAfter(mid, last) {
			st.Duplicates++
			continue
		}
		last = mid
		st.Received++
	}
	st.FromDial, st.FromGreeting = lastAt.Sub(t0), lastAt.Sub(tg)
	_ = send(rctx, c, ackFrame(last))
	return st, nil
}

// idAfter reports whether stream id a is after b.
func idAfter(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) > len(bm)
	}
	if am != bm {
		return am > bm
	}
	if len(as) != len(bs) {
		return len(as) > len(bs)
	}
	return as > bs
}
