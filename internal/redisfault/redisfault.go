// Package redisfault injects Redis faults into a go-redis client, for tests
// that must be fast and deterministic (the model test runs thousands of
// sequences): a stall whose commands are executed later, or never (a Redis
// killed before reading them), and replies lost after the command was
// executed. It does what a stalled, restarting or cut-off Redis does to the
// client, in process; the same faults on a real server are tested with
// internal/redisproc and internal/faultproxy.
//
// Install it with Client.AddHook after anything that must see the faults
// (the hub's redisx.Health gate is installed by app.New: add Faults after
// it, so that the gate's fail-fast is in front, as it is in front of the
// network).
package redisfault

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Error is what a caller gets for a command whose answer never came: a
// timeout, as from a socket read deadline. redisx.Outage reports it as an
// outage, and the outcome of what was sent is unknown.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

// Timeout reports true: the command timed out (net.Error).
func (e *Error) Timeout() bool { return true }

// Temporary reports true (net.Error).
func (e *Error) Temporary() bool { return true }

var (
	errStalled   = &Error{"redisfault: i/o timeout (Redis is stalled)"}
	errReplyLost = &Error{"redisfault: i/o timeout (the reply was lost)"}
)

// Faults is a go-redis hook. The zero value lets everything through.
type Faults struct {
	// Exec, if set, runs the commands a stall kept when Resume executes
	// them, instead of the client that sent them: Redis executes what it
	// was sent even when the process that sent it has died meanwhile (and
	// closed its client).
	Exec redis.UniversalClient

	mu         sync.Mutex
	stalled    bool     // guarded by mu
	parked     []parked // commands sent during the stall, in order; guarded by mu
	late       []parked // commands of an ended stall still on their way (ResumeLate); guarded by mu
	lose       int      // replies still to lose; guarded by mu
	loseScript int      // replies of scripts still to lose; guarded by mu
}

// parked is a command that reached a stalled Redis: a copy of it, run later
// by Resume on the path the original took.
type parked struct {
	cmds []redis.Cmder
	run  func(context.Context, []redis.Cmder) error
}

// Stall makes Redis stop answering: from now on every command is kept
// (as a stalled Redis keeps what clients send in its socket buffers) and
// its caller gets a timeout at once, as if its deadline had passed.
func (f *Faults) Stall() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalled = true
}

// Resume ends a stall. The first keep commands sent during it are executed
// now, in the order they were sent (keep < 0: all of them, as a stalled
// Redis does when it wakes); the others never are (a Redis killed before it
// read them). Commands sent while they run wait behind them, as they would
// in Redis. It reports how many were sent during the stall.
func (f *Faults) Resume(keep int) int {
	f.mu.Lock()
	p := f.parked
	f.parked = nil
	f.mu.Unlock()
	if keep < 0 || keep > len(p) {
		keep = len(p)
	}
	sent := len(p)
	for p = p[:keep]; ; {
		for _, c := range p {
			f.run(c)
		}
		f.mu.Lock()
		p = f.parked
		f.parked = nil
		if len(p) == 0 {
			f.stalled = false
			f.mu.Unlock()
			return sent
		}
		f.mu.Unlock()
	}
}

// ResumeLate ends a stall without running what was sent during it: those
// commands are still on their way, as through a network that delays them,
// and arrive when Arrive is called — after whatever was sent since.
func (f *Faults) ResumeLate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.late = append(f.late, f.parked...)
	f.parked, f.stalled = nil, false
}

// Arrive executes the commands ResumeLate left on their way, in the order
// they were sent, and reports how many there were.
func (f *Faults) Arrive() int {
	f.mu.Lock()
	p := f.late
	f.late = nil
	f.mu.Unlock()
	for _, c := range p {
		f.run(c)
	}
	return len(p)
}

// run executes a kept command (or pipeline).
func (f *Faults) run(c parked) {
	ctx := context.Background()
	switch {
	case f.Exec == nil:
		_ = c.run(ctx, c.cmds)
	case len(c.cmds) == 1:
		_ = f.Exec.Process(ctx, c.cmds[0])
	default:
		pipe := f.Exec.Pipeline()
		for _, cmd := range c.cmds {
			_ = pipe.Process(ctx, cmd)
		}
		_, _ = pipe.Exec(ctx)
	}
}

// Stalled reports whether Redis is stalled.
func (f *Faults) Stalled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stalled
}

// LoseReplies makes the next n commands (or pipelines) be executed and
// their callers get a timeout instead of the reply.
func (f *Faults) LoseReplies(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lose = n
}

// LoseScriptReplies makes the next n scripts (EVAL, EVALSHA: the hub's
// commits, acks and resolutions), alone or in a pipeline, be executed and
// their callers get a timeout instead of the reply.
func (f *Faults) LoseScriptReplies(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loseScript = n
}

// DialHook lets dials through.
func (f *Faults) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook applies the faults to a single command.
func (f *Faults) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return f.process(ctx, []redis.Cmder{cmd}, func(ctx context.Context, cmds []redis.Cmder) error {
			return next(ctx, cmds[0])
		})
	}
}

// ProcessPipelineHook applies the faults to a pipeline as a whole.
func (f *Faults) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { return f.process(ctx, cmds, next) }
}

func (f *Faults) process(ctx context.Context, cmds []redis.Cmder, next func(context.Context, []redis.Cmder) error) error {
	f.mu.Lock()
	switch {
	case f.stalled && setup(cmds):
		f.mu.Unlock()
		return fail(cmds, errStalled) // a connection's set-up: nothing to run later
	case f.stalled:
		copies := make([]redis.Cmder, len(cmds))
		for i, c := range cmds {
			copies[i] = redis.NewCmd(context.Background(), copyArgs(c.Args())...)
		}
		f.parked = append(f.parked, parked{cmds: copies, run: next})
		f.mu.Unlock()
		return fail(cmds, errStalled)
	case f.lose > 0:
		f.lose--
		f.mu.Unlock()
		_ = next(ctx, cmds)
		return fail(cmds, errReplyLost)
	case f.loseScript > 0 && script(cmds):
		f.loseScript--
		f.mu.Unlock()
		_ = next(ctx, cmds)
		return fail(cmds, errReplyLost)
	}
	f.mu.Unlock()
	return next(ctx, cmds)
}

// setup reports whether cmds set a connection up (go-redis's handshake),
// which only means something on the connection that sent it.
func setup(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		switch c.Name() {
		case "hello", "auth", "client", "select":
			return true
		}
	}
	return false
}

// script reports whether cmds hold a script.
func script(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if n := c.Name(); n == "evalsha" || n == "eval" {
			return true
		}
	}
	return false
}

// copyArgs copies a command's arguments as they would stand on the wire:
// its caller may reuse a byte slice it passed once the command has
// returned (the session's encode buffers are pooled).
func copyArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if b, ok := a.([]byte); ok {
			a = append([]byte(nil), b...)
		}
		out[i] = a
	}
	return out
}

func fail(cmds []redis.Cmder, err error) error {
	for _, c := range cmds {
		c.SetErr(err)
	}
	return err
}
