package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/protocol"
)

// recorder collects what a Reconnector did, without real waits.
type recorder struct {
	mu       sync.Mutex
	sleeps   []time.Duration
	connects []string
	actions  []string
	drops    []error
}

func (rc *recorder) reconnector() *Reconnector {
	return &Reconnector{
		Jitter: func(d time.Duration) time.Duration { return d },
		Sleep: func(ctx context.Context, d time.Duration) error {
			rc.mu.Lock()
			rc.sleeps = append(rc.sleeps, d)
			rc.mu.Unlock()
			return ctx.Err()
		},
		OnConnect: func(c *Conn) {
			rc.mu.Lock()
			rc.connects = append(rc.connects, c.ConnectionID())
			rc.mu.Unlock()
		},
		OnDisconnect: func(err error) {
			rc.mu.Lock()
			rc.drops = append(rc.drops, err)
			rc.mu.Unlock()
		},
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func forceDisconnect(sc *serverConn, code protocol.CloseCode, reason string, allowed bool) {
	d := &protocol.Disconnect{Code: code, Reason: reason, Message: "bye", ReconnectAllowed: allowed}
	sc.send(context.Background(), d.Frame())
	sc.ws.Close(websocket.StatusCode(code), reason)
}

func TestReconnectorRedialsAndStopsWhenForbidden(t *testing.T) {
	acks := make(chan string, 1)
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			ctx := context.Background()
			switch sc.id {
			case "conn_1": // deliver a durable message, take the ack, drop
				sc.send(ctx, map[string]any{"action": protocol.ActionPaymentComplete, "messageId": "1-0"})
				_, b, err := sc.ws.Read(ctx)
				if err != nil {
					t.Errorf("reading ack: %v", err)
					return
				}
				in, err := protocol.DecodePOS(b)
				if err != nil || in.Action != protocol.ActionAck {
					t.Errorf("ack frame %s: %v", b, err)
					return
				}
				acks <- in.Body.(*protocol.AckRequest).MessageID
			case "conn_2": // drain
				forceDisconnect(sc, protocol.CloseShutdown, protocol.ReasonShutdown, true)
			case "conn_3": // fighting keys
				forceDisconnect(sc, protocol.CloseDisplaced, protocol.ReasonAPIKeyUsedElsewhere, false)
			default:
				t.Errorf("unexpected %s", sc.id)
			}
		}
	})
	ctx := testCtx(t)
	rc := &recorder{}
	r := rc.reconnector()
	err := r.Run(ctx,
		func(ctx context.Context) (*Conn, error) { return DialPOS(ctx, h.opts(), "pk_test", "sk_test") },
		func(ctx context.Context, c *Conn, m Message) error {
			rc.actions = append(rc.actions, c.ConnectionID()+":"+m.Action)
			if id := m.MessageID(); id != "" {
				return c.Ack(ctx, id)
			}
			return nil
		})
	if !errors.Is(err, ErrReconnectForbidden) {
		t.Fatalf("Run = %v, want ErrReconnectForbidden", err)
	}
	if got := <-acks; got != "1-0" {
		t.Fatalf("hub got ack %q", got)
	}
	wantConnects := []string{"conn_1", "conn_2", "conn_3"}
	if len(rc.connects) != 3 || rc.connects[0] != wantConnects[0] || rc.connects[2] != wantConnects[2] {
		t.Fatalf("connects %v, want %v", rc.connects, wantConnects)
	}
	wantActions := []string{"conn_1:paymentComplete", "conn_2:forceDisconnect", "conn_3:forceDisconnect"}
	if len(rc.actions) != 3 || rc.actions[0] != wantActions[0] || rc.actions[1] != wantActions[1] || rc.actions[2] != wantActions[2] {
		t.Fatalf("handled %v, want %v", rc.actions, wantActions)
	}
	// Every connection that was up resets the backoff.
	if want := []time.Duration{DefaultBaseDelay, DefaultBaseDelay}; !equalDurations(rc.sleeps, want) {
		t.Fatalf("sleeps %v, want %v", rc.sleeps, want)
	}
	if len(rc.drops) != 2 {
		t.Fatalf("OnDisconnect got %v", rc.drops)
	}
}

func TestReconnectorBackoffGrowsOnFailedDials(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			if sc.id == "conn_2" {
				forceDisconnect(sc, protocol.CloseDisplaced, protocol.ReasonAPIKeyUsedElsewhere, false)
			}
			// conn_1 just drops.
		}
	})
	ctx := testCtx(t)
	rc := &recorder{}
	r := rc.reconnector()
	calls := 0
	dialErr := errors.New("network down")
	err := r.Run(ctx,
		func(ctx context.Context) (*Conn, error) {
			calls++
			switch calls {
			case 1, 2, 4:
				return nil, dialErr
			}
			return DialPOS(ctx, h.opts(), "pk_test", "sk_test")
		},
		func(context.Context, *Conn, Message) error { return nil })
	if !errors.Is(err, ErrReconnectForbidden) {
		t.Fatalf("Run = %v", err)
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	if !equalDurations(rc.sleeps, want) {
		t.Fatalf("sleeps %v, want %v", rc.sleeps, want)
	}
	if len(rc.drops) != 4 || !errors.Is(rc.drops[0], dialErr) {
		t.Fatalf("OnDisconnect got %v", rc.drops)
	}
}

func TestReconnectorBackoffBounds(t *testing.T) {
	r := &Reconnector{}
	for attempt, want := range map[int]time.Duration{
		0: 200 * time.Millisecond, 1: 400 * time.Millisecond, 5: 6400 * time.Millisecond,
		6: 10 * time.Second, 1000: 10 * time.Second,
	} {
		if got := r.Backoff(attempt); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", attempt, got, want)
		}
	}
	r = &Reconnector{BaseDelay: time.Second, MaxDelay: 3 * time.Second}
	if r.Backoff(0) != time.Second || r.Backoff(2) != 3*time.Second {
		t.Errorf("custom bounds: %v %v", r.Backoff(0), r.Backoff(2))
	}

	// Default jitter stays within [0, ceiling].
	var got []time.Duration
	r = &Reconnector{Sleep: func(_ context.Context, d time.Duration) error { got = append(got, d); return nil }}
	for range 100 {
		r.sleep(context.Background(), time.Second)
	}
	for _, d := range got {
		if d < 0 || d > time.Second {
			t.Fatalf("jittered wait %v outside [0, 1s]", d)
		}
	}
}

func TestReconnectorHandlerErrorRedials(t *testing.T) {
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			ctx := context.Background()
			if sc.id == "conn_1" {
				sc.send(ctx, map[string]any{"action": protocol.ActionPaymentComplete, "messageId": "1-0"})
				sc.ws.Read(ctx) // until the client closes
				return
			}
			forceDisconnect(sc, protocol.CloseDisplaced, protocol.ReasonAPIKeyUsedElsewhere, false)
		}
	})
	rc := &recorder{}
	r := rc.reconnector()
	handlerErr := errors.New("cannot ack")
	err := r.Run(testCtx(t),
		func(ctx context.Context) (*Conn, error) { return DialPOS(ctx, h.opts(), "pk_test", "sk_test") },
		func(_ context.Context, c *Conn, m Message) error {
			if c.ConnectionID() == "conn_1" {
				return handlerErr
			}
			return nil
		})
	if !errors.Is(err, ErrReconnectForbidden) {
		t.Fatalf("Run = %v", err)
	}
	if len(rc.drops) != 1 || !errors.Is(rc.drops[0], handlerErr) || len(rc.connects) != 2 {
		t.Fatalf("drops %v connects %v", rc.drops, rc.connects)
	}
}

func TestReconnectorReturnsNilWhenContextEnds(t *testing.T) {
	status := make(chan websocket.StatusCode, 1)
	h := newFakeHub(t, func(h *fakeHub) {
		h.script = func(sc *serverConn) {
			_, _, err := sc.ws.Read(context.Background())
			status <- websocket.CloseStatus(err)
		}
	})
	ctx, cancel := context.WithCancel(testCtx(t))
	r := &Reconnector{OnConnect: func(*Conn) { cancel() }}
	err := r.Run(ctx,
		func(ctx context.Context) (*Conn, error) { return DialPOS(ctx, h.opts(), "pk_test", "sk_test") },
		func(context.Context, *Conn, Message) error { return nil })
	if err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if s := <-status; s != websocket.StatusNormalClosure {
		t.Fatalf("hub saw close %v, want normal closure", s)
	}

	// Cancelled while waiting to redial.
	ctx, cancel = context.WithCancel(testCtx(t))
	r = &Reconnector{Sleep: func(ctx context.Context, d time.Duration) error {
		cancel()
		return SleepContext(ctx, time.Hour)
	}}
	err = r.Run(ctx,
		func(context.Context) (*Conn, error) { return nil, errors.New("down") },
		func(context.Context, *Conn, Message) error { return nil })
	if err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

func TestSleepContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := SleepContext(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if err := SleepContext(context.Background(), 0); err != nil {
		t.Fatalf("zero wait: %v", err)
	}
}
