package redisx

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Batcher sends commands that many goroutines issue at the same time to
// Redis in shared pipelines, so that under load a hundred commits cost one
// write and one read instead of a hundred of each (on a small machine the
// socket system calls, on both sides, are most of a commit's cost).
//
// There is no batching goroutine and no timer: a caller that finds a free
// slot sends its command at once (so a lone caller pays nothing extra), and
// callers that arrive while every slot is busy queue up; when a pipeline
// returns, its slot passes to the oldest queued caller, which sends
// everything queued so far as one pipeline.
type Batcher struct {
	rdb   redis.UniversalClient
	slots int // pipelines in flight at most

	mu      sync.Mutex
	active  int     // pipelines in flight; guarded by mu
	pending []*call // commands waiting for a slot; guarded by mu
}

// call is one caller's command and how it is told the outcome.
type call struct {
	ctx       context.Context
	passenger bool          // taken into a pipeline another caller sends; guarded by Batcher.mu
	cmds      []redis.Cmder // in order, all in the same pipeline
	// lead receives the batch this caller must send (it was handed a
	// slot), or nil once another caller has sent its command.
	lead chan []*call
}

// maxBatch bounds the calls in one pipeline, so that the first command in a long queue
// is not held back by the thousandth.
const maxBatch = 256

// DefaultSlots is the number of pipelines a Batcher keeps in flight.
const DefaultSlots = 4

// NewBatcher returns a Batcher on rdb with slots pipelines in flight at most
// (DefaultSlots when slots <= 0).
func NewBatcher(rdb redis.UniversalClient, slots int) *Batcher {
	if slots <= 0 {
		slots = DefaultSlots
	}
	return &Batcher{rdb: rdb, slots: slots}
}

// ErrNoAnswer is the error of a caller whose deadline passed while its
// command was on its way in another caller's pipeline: it may still be
// applied, as after any timeout. The command then belongs to the pipeline,
// which still writes its reply: the caller must not read it.
var ErrNoAnswer = errors.New("redis: no answer within the caller's time (the command may still be applied)")

// Do runs cmd, alone or in a pipeline with other callers' commands, and
// returns cmd.Err(). Every caller has its answer by its own deadline: one
// whose deadline passes while it waits for its turn leaves with
// ErrUnavailable (its command was never sent); one whose command goes in
// another caller's pipeline leaves at its deadline with ErrNoAnswer; one
// that sends a pipeline runs it with its own deadline (and without its
// cancellation, since the pipeline carries other callers' commands too:
// the outcome of what was sent must be learnt).
func (b *Batcher) Do(ctx context.Context, cmd redis.Cmder) error {
	return b.DoAll(ctx, cmd)
}

// DoAll is Do for several commands, sent in order in the same pipeline (not
// atomically: each may fail on its own); it returns the first error among
// them.
func (b *Batcher) DoAll(ctx context.Context, cmds ...redis.Cmder) error {
	if ctx.Err() != nil { // the caller's time is up before anything was sent
		for _, cmd := range cmds {
			cmd.SetErr(ErrUnavailable)
		}
		return ErrUnavailable
	}
	c := &call{cmds: cmds, ctx: ctx}
	b.mu.Lock()
	if b.active < b.slots {
		b.active++
		b.mu.Unlock()
		b.send([]*call{c})
		return c.err()
	}
	c.lead = make(chan []*call, 1)
	b.pending = append(b.pending, c)
	b.mu.Unlock()
	var batch []*call
	select {
	case batch = <-c.lead:
	case <-ctx.Done():
		switch b.leave(c) {
		case stillQueued:
			for _, cmd := range cmds {
				cmd.SetErr(ErrUnavailable)
			}
			return ErrUnavailable
		case inPipeline:
			return ErrNoAnswer
		}
		batch = <-c.lead // chosen to send the next pipeline: it carries others too
	}
	if batch != nil {
		b.send(batch)
	}
	return c.err()
}

// Where a caller stands when it wants to leave.
const (
	stillQueued = iota // not sent: taken out of the queue
	inPipeline         // in a pipeline another caller sends
	sending            // chosen to send the next pipeline
)

// leave takes c out of the queue if it is still there, and reports where
// it stands.
func (b *Batcher) leave(c *call) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, p := range b.pending {
		if p == c {
			b.pending = append(b.pending[:i:i], b.pending[i+1:]...)
			return stillQueued
		}
	}
	if c.passenger {
		return inPipeline
	}
	return sending
}

// err is the first error among the call's commands.
func (c *call) err() error {
	for _, cmd := range c.cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// send runs batch on the caller's slot, then passes the slot on.
func (b *Batcher) send(batch []*call) {
	defer func() {
		// A panic here (a client hook, say) must not strand the callers
		// queued behind this one: they get an error, the slot moves on, and
		// the panic goes on up this caller's goroutine.
		if v := recover(); v != nil {
			for _, c := range batch {
				for _, cmd := range c.cmds {
					cmd.SetErr(fmt.Errorf("redisx: pipeline aborted: %v", v))
				}
			}
			b.pass(batch)
			panic(v)
		}
	}()
	ctx := batchContext(batch)
	if len(batch) == 1 && len(batch[0].cmds) == 1 {
		_ = b.rdb.Process(ctx, batch[0].cmds[0])
	} else {
		pipe := b.rdb.Pipeline()
		for _, c := range batch {
			for _, cmd := range c.cmds {
				_ = pipe.Process(ctx, cmd)
			}
		}
		// Each command carries its own error; Exec's is the first of them.
		_, _ = pipe.Exec(ctx)
	}
	b.pass(batch)
}

// batchContext is the context a pipeline runs with: the values and the
// deadline of the caller that sends it (batch[0]), without its
// cancellation. Its other callers leave at their own deadlines (DoAll); one
// whose deadline is later than the sender's gets the timeout, an outcome
// as unknown as its own would have been.
func batchContext(batch []*call) context.Context { return detached{batch[0].ctx} }

// detached is a context with its parent's values and deadline that is
// never done: the client bounds the pipeline's socket reads and writes by
// the deadline, and no caller's cancellation cuts a pipeline that carries
// others' commands too. (context.WithoutCancel drops the deadline, and a
// deadline of its own would cost a timer per pipeline.)
type detached struct{ context.Context }

func (detached) Done() <-chan struct{} { return nil }
func (detached) Err() error            { return nil }

// pass tells every other caller in batch that its command is done and
// passes the slot to the oldest queued caller, or frees it.
func (b *Batcher) pass(batch []*call) {
	for _, c := range batch[1:] {
		c.lead <- nil
	}
	b.mu.Lock()
	if len(b.pending) == 0 {
		b.active--
		b.mu.Unlock()
		return
	}
	next := b.pending
	if len(next) > maxBatch {
		b.pending = append([]*call(nil), next[maxBatch:]...)
		next = next[:maxBatch]
	} else {
		b.pending = nil
	}
	for _, c := range next[1:] {
		c.passenger = true
	}
	b.mu.Unlock()
	next[0].lead <- next
}

// RunScript runs script through b like redis.Script.Run: EVALSHA, and EVAL
// when the server does not know the script yet (it loads it for the next
// time). The EVAL goes straight to rdb: it happens once per server start.
func RunScript(ctx context.Context, b *Batcher, rdb redis.Scripter, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return RunScriptArgs(ctx, b, rdb, script, keys, append(ScriptArgs(script, keys, len(args)), args...))
}

// ScriptArgs starts the arguments of an EVALSHA of script on keys, with
// room for extra more, for a caller that builds its arguments in place
// (RunScriptArgs) instead of in a slice of its own that RunScript copies.
func ScriptArgs(script *redis.Script, keys []string, extra int) []any {
	cmdArgs := make([]any, 0, 3+len(keys)+extra)
	cmdArgs = append(cmdArgs, "evalsha", script.Hash(), len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	return cmdArgs
}

// RunScriptArgs is RunScript with cmdArgs from ScriptArgs(script, keys, n)
// followed by the script's arguments.
func RunScriptArgs(ctx context.Context, b *Batcher, rdb redis.Scripter, script *redis.Script, keys []string, cmdArgs []any) *redis.Cmd {
	cmd := redis.NewCmd(ctx, cmdArgs...)
	err := b.Do(ctx, cmd)
	switch {
	case errors.Is(err, ErrNoAnswer):
		// cmd is the pipeline's now (and so are cmdArgs, until it is sent).
		left := redis.NewCmd(ctx)
		left.SetErr(err)
		return left
	case err != nil && redis.HasErrorPrefix(err, "NOSCRIPT"):
		return script.Eval(ctx, rdb, keys, cmdArgs[3+len(keys):]...)
	}
	return cmd
}
