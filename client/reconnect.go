package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/termhub/termhub/protocol"
)

// Default backoff bounds of a Reconnector.
const (
	DefaultBaseDelay = 200 * time.Millisecond
	DefaultMaxDelay  = 10 * time.Second
)

// ErrReconnectForbidden is returned by Reconnector.Run when the hub said
// forceDisconnect with reconnectAllowed false (fighting keys, docs/protocol.md#connections).
// Redialing then would only displace the other holder of the key again, so
// a human has to decide.
var ErrReconnectForbidden = errors.New("client: hub forbade reconnecting")

// Reconnector keeps one POS or terminal connection alive across drops, hub
// restarts and displacements, the way the contract expects real clients to:
// redial with exponential backoff and full jitter (so a fleet of terminals
// does not reconnect in lock-step after a hub restart) and give up only when
// the hub says so. The zero value is ready to use; set fields before Run.
type Reconnector struct {
	// BaseDelay is the first backoff step; 0 means DefaultBaseDelay.
	BaseDelay time.Duration
	// MaxDelay caps the backoff; 0 means DefaultMaxDelay.
	MaxDelay time.Duration

	// Sleep waits d or until ctx ends, returning ctx's error then. Tests
	// replace it to observe delays without waiting; nil uses a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter picks the actual wait in [0, d]. Tests replace it to make
	// delays deterministic; nil picks uniformly at random.
	Jitter func(d time.Duration) time.Duration

	// OnConnect runs after each successful dial, before the first message
	// is handled, so the owner can publish the new *Conn to goroutines that
	// send on it and read Conn.Greeting (the hub's snapshot). Run does not
	// pass the greeting to the handler.
	OnConnect func(*Conn)
	// OnDisconnect runs with the reason each time a dial fails or a
	// connection ends and Run is about to wait and redial, for logging.
	OnDisconnect func(err error)
}

// Run dials, feeds every message of the connection to handle, and redials
// when the connection ends, until ctx ends (then it closes the connection
// normally and returns nil) or the hub forbids reconnecting (then it returns
// an error wrapping ErrReconnectForbidden).
//
// handle runs on Run's goroutine, one message at a time, with Run's ctx;
// it may send on the Conn it is given (a POS acks there). forceDisconnect
// messages are passed to handle too, before Run acts on them. An error from
// handle is treated like a dropped connection: the connection is closed and
// redialed, since most handler failures are failed sends on a connection
// that is going away anyway. To stop for good, cancel ctx.
func (r *Reconnector) Run(ctx context.Context, dial func(ctx context.Context) (*Conn, error), handle func(ctx context.Context, c *Conn, m Message) error) error {
	attempt := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		c, err := dial(ctx)
		if err == nil {
			attempt = 0
			err = r.serve(ctx, c, handle)
			if errors.Is(err, ErrReconnectForbidden) {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if r.OnDisconnect != nil {
			r.OnDisconnect(err)
		}
		if r.sleep(ctx, r.Backoff(attempt)) != nil {
			return nil
		}
		attempt++
	}
}

// serve runs one connection to its end and says why it ended.
func (r *Reconnector) serve(ctx context.Context, c *Conn, handle func(context.Context, *Conn, Message) error) error {
	// Reading with ctx would make the library drop the connection without a
	// close frame when ctx ends; closing it ourselves tells the hub this
	// client left on purpose.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.CloseNow()

	if r.OnConnect != nil {
		r.OnConnect(c)
	}
	for {
		m, err := c.Read(context.Background())
		if err != nil {
			return err
		}
		if err := handle(ctx, c, m); err != nil {
			c.Close()
			return fmt.Errorf("client: handler: %w", err)
		}
		if m.Action != protocol.ActionForceDisconnect {
			continue
		}
		var fd protocol.ForceDisconnect
		if err := m.Decode(&fd); err != nil {
			c.Close()
			return fmt.Errorf("client: decoding forceDisconnect: %w", err)
		}
		// The hub closes right after forceDisconnect; closing from this side
		// as well means a hub that forgets to cannot hang the client.
		c.Close()
		if !fd.ReconnectAllowed {
			return fmt.Errorf("%w: %s: %s", ErrReconnectForbidden, fd.Reason, fd.Message)
		}
		return fmt.Errorf("client: forceDisconnect: %s: %s", fd.Reason, fd.Message)
	}
}

// Backoff is the upper bound of the wait before redial number attempt
// (0-based): BaseDelay doubled attempt times, capped at MaxDelay. The wait
// itself is a random fraction of it (full jitter).
func (r *Reconnector) Backoff(attempt int) time.Duration {
	base, ceiling := r.BaseDelay, r.MaxDelay
	if base <= 0 {
		base = DefaultBaseDelay
	}
	if ceiling <= 0 {
		ceiling = DefaultMaxDelay
	}
	d := base
	for i := 0; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

func (r *Reconnector) sleep(ctx context.Context, ceiling time.Duration) error {
	d := ceiling
	if r.Jitter != nil {
		d = r.Jitter(ceiling)
	} else if ceiling > 0 {
		d = rand.N(ceiling + 1)
	}
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	return SleepContext(ctx, d)
}

// SleepContext waits d or until ctx ends, whichever is first, and returns
// ctx's error in the latter case. It is Reconnector's default Sleep.
func SleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
