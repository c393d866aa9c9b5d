package redisx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/redistest"
)

// pipeHook records the size of every pipeline and can hold the first plain
// command in flight, so a test can make callers queue behind it.
type pipeHook struct {
	mu    sync.Mutex
	sizes []int         // of the pipelines that carry test commands
	hold  chan struct{} // when set, the first single command waits on it
	held  chan struct{} // closed once that command is waiting
}

func (h *pipeHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *pipeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		hold := h.hold
		h.hold = nil
		h.mu.Unlock()
		if hold != nil {
			close(h.held)
			<-hold
		}
		return next(ctx, cmd)
	}
}

func (h *pipeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[len(cmds)-1].Name() == "incrby" { // not the client's own connection set-up
			h.mu.Lock()
			h.sizes = append(h.sizes, len(cmds))
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// waitQueued yields until n callers are queued behind the busy slot, and
// fails the test if they are not within 5 s.
func waitQueued(t *testing.T, b *Batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d callers queued after 5 s, want %d", b.queued(), n)
		}
		runtime.Gosched()
	}
}

func (b *Batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// TestBatcherQueuesIntoOnePipeline holds the only slot busy, queues 50
// callers behind it and checks that they go out as one pipeline, each with
// its own reply, one of them an error that the others do not share.
func TestBatcherQueuesIntoOnePipeline(t *testing.T) {
	r := redistest.New(t)
	b := NewBatcher(r.Client, 1)
	ctx := context.Background()
	notInt := r.Prefix + "text"
	if err := r.Client.Set(ctx, notInt, "abc", 0).Err(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	hook := &pipeHook{hold: release, held: make(chan struct{})}
	r.Client.AddHook(hook)

	first := make(chan error, 1)
	go func() { first <- b.Do(ctx, redis.NewCmd(ctx, "incr", r.Prefix+"first")) }()
	<-hook.held

	const n = 50
	var wg sync.WaitGroup
	cmds := make([]*redis.IntCmd, n)
	errs := make([]error, n)
	for i := range n {
		key := fmt.Sprintf("%sk%d", r.Prefix, i)
		if i == 7 {
			key = notInt
		}
		cmds[i] = redis.NewIntCmd(ctx, "incrby", key, i+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Do(ctx, cmds[i])
		}()
	}
	waitQueued(t, b, n)
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first command: %v", err)
	}
	for i := range n {
		if i == 7 {
			if errs[i] == nil || !strings.Contains(errs[i].Error(), "not an integer") {
				t.Fatalf("command 7 (INCRBY on a string) returned %v, want a 'not an integer' error", errs[i])
			}
			continue
		}
		if errs[i] != nil || cmds[i].Val() != int64(i+1) {
			t.Fatalf("command %d: %d, %v; want %d, nil", i, cmds[i].Val(), errs[i], i+1)
		}
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.sizes) != 1 || hook.sizes[0] != n {
		t.Fatalf("pipelines sent: %v, want one of %d commands", hook.sizes, n)
	}
}

// TestBatcherManyCallers runs many concurrent callers with several slots:
// every command is applied exactly once and every caller sees its own reply.
func TestBatcherManyCallers(t *testing.T) {
	r := redistest.New(t)
	b := NewBatcher(r.Client, 3)
	ctx := context.Background()
	const callers, each = 40, 25
	var wg sync.WaitGroup
	fail := make(chan string, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("%sc%d", r.Prefix, g)
			for i := 1; i <= each; i++ {
				cmd := redis.NewIntCmd(ctx, "incr", key)
				if err := b.Do(ctx, cmd); err != nil || cmd.Val() != int64(i) {
					fail <- fmt.Sprintf("caller %d step %d: %d, %v", g, i, cmd.Val(), err)
					return
				}
				total := redis.NewIntCmd(ctx, "incr", r.Prefix+"total")
				if err := b.Do(ctx, total); err != nil {
					fail <- err.Error()
					return
				}
			}
		}()
	}
	wg.Wait()
	close(fail)
	for f := range fail {
		t.Error(f)
	}
	if got, err := r.Client.Get(ctx, r.Prefix+"total").Int(); err != nil || got != callers*each {
		t.Fatalf("total = %d, %v; want %d", got, err, callers*each)
	}
}

// TestBatcherSendsNothingForACallerWhoseTimeIsUp shows that a caller whose
// context ended before its command could be sent — at once, or while it
// waited for its turn — gets ErrUnavailable, and the command never reaches
// Redis: its outcome is known.
func TestBatcherSendsNothingForACallerWhoseTimeIsUp(t *testing.T) {
	r := redistest.New(t)
	release := make(chan struct{})
	hook := &pipeHook{hold: release, held: make(chan struct{})}
	r.Client.AddHook(hook)
	b := NewBatcher(r.Client, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Do(ctx, redis.NewStatusCmd(ctx, "set", r.Prefix+"early", "1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Do with an ended context: %v, want ErrUnavailable", err)
	}
	// One caller holds the only slot; another queues behind it and its
	// deadline passes while it waits.
	busy := make(chan error, 1)
	go func() {
		busy <- b.Do(context.Background(), redis.NewStatusCmd(context.Background(), "set", r.Prefix+"first", "1"))
	}()
	<-hook.held
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if err := b.Do(wctx, redis.NewStatusCmd(wctx, "set", r.Prefix+"queued", "1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Do whose deadline passed in the queue: %v, want ErrUnavailable", err)
	}
	close(release)
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"early", "queued"} {
		if n, err := r.Client.Exists(context.Background(), r.Prefix+k).Result(); err != nil || n != 0 {
			t.Errorf("%s: exists %d, %v: a command not sent must not be applied", k, n, err)
		}
	}
}

// TestBatcherWaitsForACommandSent shows that a caller whose context is
// cancelled once its command is on its way still learns the outcome: it
// may have been applied.
func TestBatcherWaitsForACommandSent(t *testing.T) {
	r := redistest.New(t)
	release := make(chan struct{})
	hook := &pipeHook{hold: release, held: make(chan struct{})}
	r.Client.AddHook(hook)
	b := NewBatcher(r.Client, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := redis.NewStatusCmd(ctx, "set", r.Prefix+"x", "1")
	done := make(chan error, 1)
	go func() { done <- b.Do(ctx, cmd) }()
	<-hook.held
	cancel()
	close(release)
	if err := <-done; err != nil || cmd.Val() != "OK" {
		t.Fatalf("Do cancelled while in flight: %q, %v; want OK", cmd.Val(), err)
	}
}

// panicHook panics in the first pipeline it sees.
type panicHook struct{ pipeHook }

func (h *panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[len(cmds)-1].Name() == "incr" {
			panic("hook exploded")
		}
		return next(ctx, cmds)
	}
}

// TestBatcherPanicDoesNotStrandQueuedCallers: a panic while a pipeline is
// sent reaches the goroutine that sent it, every other caller in that
// pipeline gets an error instead of waiting forever, and the slot is free
// for the next command.
func TestBatcherPanicDoesNotStrandQueuedCallers(t *testing.T) {
	r := redistest.New(t)
	b := NewBatcher(r.Client, 1)
	ctx := context.Background()
	release := make(chan struct{})
	hook := &panicHook{pipeHook{hold: release, held: make(chan struct{})}}
	r.Client.AddHook(hook)

	first := make(chan error, 1)
	go func() { first <- b.Do(ctx, redis.NewCmd(ctx, "set", r.Prefix+"first", "1")) }()
	<-hook.held

	const n = 5
	type outcome struct {
		err      error
		panicked bool
	}
	outcomes := make(chan outcome, n)
	for i := range n {
		go func() {
			o := outcome{}
			defer func() {
				if v := recover(); v != nil {
					o.panicked = true
				}
				outcomes <- o
			}()
			o.err = b.Do(ctx, redis.NewIntCmd(ctx, "incr", fmt.Sprintf("%sp%d", r.Prefix, i)))
		}()
	}
	waitQueued(t, b, n)
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first command: %v", err)
	}
	panics, aborted := 0, 0
	for range n {
		o := <-outcomes
		switch {
		case o.panicked:
			panics++
		case o.err != nil && strings.Contains(o.err.Error(), "pipeline aborted"):
			aborted++
		default:
			t.Errorf("a caller in the panicking pipeline returned %v, want an aborted error", o.err)
		}
	}
	if panics != 1 || aborted != n-1 {
		t.Fatalf("%d callers saw the panic and %d an aborted error, want 1 and %d", panics, aborted, n-1)
	}
	cmd := redis.NewStatusCmd(ctx, "set", r.Prefix+"after", "1")
	if err := b.Do(ctx, cmd); err != nil || cmd.Val() != "OK" {
		t.Fatalf("a command after the panic: %q, %v; want OK (the slot must be free)", cmd.Val(), err)
	}
}

// TestBatcherDoAll: a caller's commands go out in order in one pipeline,
// alone (a free slot) or with queued callers' commands, and the caller gets
// the first error among its own commands only.
func TestBatcherDoAll(t *testing.T) {
	r := redistest.New(t)
	b := NewBatcher(r.Client, 1)
	ctx := context.Background()
	hook := &pipeHook{}
	r.Client.AddHook(hook)

	set := redis.NewStatusCmd(ctx, "set", r.Prefix+"a", "1")
	incr := redis.NewIntCmd(ctx, "incrby", r.Prefix+"a", 2) // after the set: 3
	if err := b.DoAll(ctx, set, incr); err != nil || incr.Val() != 3 {
		t.Fatalf("DoAll(set, incrby): %d, %v; want 3, nil (in order)", incr.Val(), err)
	}
	hook.mu.Lock()
	if len(hook.sizes) != 1 || hook.sizes[0] != 2 {
		t.Fatalf("pipelines: %v, want one of 2 commands", hook.sizes)
	}
	hook.sizes = nil
	hook.mu.Unlock()

	// Queued behind a held command: two callers of two commands each share
	// one pipeline; one caller's failing command is not the other's error.
	hook.mu.Lock()
	hook.hold, hook.held = make(chan struct{}), make(chan struct{})
	release := hook.hold
	hook.mu.Unlock()
	first := make(chan error, 1)
	go func() { first <- b.Do(ctx, redis.NewCmd(ctx, "get", r.Prefix+"a")) }()
	<-hook.held
	bad := redis.NewIntCmd(ctx, "incrby", r.Prefix+"a", "x") // not an integer
	after := redis.NewIntCmd(ctx, "incrby", r.Prefix+"b", 5)
	good1 := redis.NewIntCmd(ctx, "incrby", r.Prefix+"c", 1)
	good2 := redis.NewIntCmd(ctx, "incrby", r.Prefix+"c", 1)
	errs := make(chan error, 2)
	go func() { errs <- b.DoAll(ctx, bad, after) }()
	waitQueued(t, b, 1)
	go func() { errs <- b.DoAll(ctx, good1, good2) }()
	waitQueued(t, b, 2)
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var failed, ok int
	for range 2 {
		if err := <-errs; err != nil {
			failed++
		} else {
			ok++
		}
	}
	if failed != 1 || ok != 1 || bad.Err() == nil || after.Val() != 5 || good2.Val() != 2 {
		t.Fatalf("failed %d, ok %d; bad %v, after %d, good2 %d: want the bad caller alone to fail, every other command applied", failed, ok, bad.Err(), after.Val(), good2.Val())
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.sizes) != 1 || hook.sizes[0] != 4 {
		t.Fatalf("pipelines: %v, want one of 4 commands", hook.sizes)
	}
}
