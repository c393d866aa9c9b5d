package session

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// orderLog records the order in which commits had their turn.
type orderLog struct {
	mu  sync.Mutex
	got []int
}

func (l *orderLog) add(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, i)
}

func (l *orderLog) list() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// takeTurn waits for p's turn in a goroutine, records i, and ends the turn;
// the channel closes when it has.
func takeTurn(p *place, log *orderLog, i int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.wait()
		log.add(i)
		p.done()
	}()
	return done
}

// Places in one key's line are served in the order they were taken,
// whatever order their commits come back in.
func TestOrderingServesInPlaceOrder(t *testing.T) {
	var o ordering
	var log orderLog
	places := make([]*place, 4)
	for i := range places {
		places[i] = o.take("m1", []string{"pk1"})
	}
	var ended []<-chan struct{}
	for i := len(places) - 1; i >= 1; i-- { // the later ones are ready first
		ended = append(ended, takeTurn(places[i], &log, i))
	}
	places[0].wait() // first in line: no wait
	log.add(0)
	places[0].done()
	for _, c := range ended {
		<-c
	}
	if got := log.list(); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("turns %v, want [0 1 2 3]", got)
	}
}

// A place given up out of turn is skipped when its turn comes, and one
// given up in its turn lets the next go at once.
func TestOrderingSkipsPlacesLeft(t *testing.T) {
	var o ordering
	first := o.take("m1", []string{"pk1"})
	left := o.take("m1", []string{"pk1"})
	third := o.take("m1", []string{"pk1"})
	left.leave() // out of turn: the first has not had its turn
	var log orderLog
	done := takeTurn(third, &log, 3)
	first.wait()
	log.add(1)
	first.done()
	<-done
	if got := log.list(); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("turns %v, want [1 3]", got)
	}
	// In its turn: the next one's wait returns at once.
	a := o.take("m1", []string{"pk1"})
	b := o.take("m1", []string{"pk1"})
	a.leave()
	b.wait()
	b.done()
	l := &o.lines[stripe("m1", "pk1")]
	if l.served != l.next || l.left != nil {
		t.Fatalf("line served %d of %d, %d left over; want all served", l.served, l.next, len(l.left))
	}
}

// Different keys do not wait for each other, and a commit with places in
// two lines is served in the order the places were taken in both, whatever
// order its keys came in (TestOrderingCrossedKeysUnderLoad has many at
// once).
func TestOrderingKeysApartAndTogether(t *testing.T) {
	var o ordering
	if stripe("m1", "pk1") == stripe("m1", "pk2") {
		t.Fatal("pk1 and pk2 share a line: pick other names")
	}
	held := o.take("m1", []string{"pk1"})
	other := o.take("m1", []string{"pk2"})
	other.wait() // pk1's place, not served, does not hold pk2's
	other.done()

	ab := o.take("m1", []string{"pk1", "pk2"})
	ba := o.take("m1", []string{"pk2", "pk1", "pk2"}) // a repeat takes one place
	if len(ba.lines) != 2 {
		t.Fatalf("%d places for two keys", len(ba.lines))
	}
	var log orderLog
	done := takeTurn(ba, &log, 2)
	held.wait()
	held.done()
	ab.wait()
	log.add(1)
	ab.done()
	<-done
	if got := log.list(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("turns %v, want [1 2]", got)
	}
}

// holdFirst is a go-redis hook that holds the commit of the terminal first
// until a commit of the terminal second has come back from Redis, or until
// patience runs out: the second commit is then applied and answered before
// the first.
type holdFirst struct {
	first, second string // a key each commit carries
	patience      time.Duration
	entered       chan struct{} // closed when the first commit reached the hook
	answered      chan struct{} // closed when the second commit's answer came back
	once1, once2  sync.Once
	overlapped    bool // the second was answered while the first was held
}

// which tells the first commit (1) and the second (2) among cmds, or 0.
func (h *holdFirst) which(cmds []redis.Cmder) int {
	for _, c := range cmds {
		if c.Name() != "evalsha" && c.Name() != "eval" {
			continue
		}
		args := fmt.Sprint(c.Args()...)
		switch {
		case strings.Contains(args, h.second):
			return 2
		case strings.Contains(args, h.first):
			return 1
		}
	}
	return 0
}

func (h *holdFirst) around(cmds []redis.Cmder, next func() error) error {
	switch h.which(cmds) {
	case 1:
		h.once1.Do(func() {
			close(h.entered)
			select {
			case <-h.answered:
				h.overlapped = true
			case <-time.After(h.patience):
			}
		})
	case 2:
		err := next()
		h.once2.Do(func() { close(h.answered) })
		return err
	}
	return next()
}

func (h *holdFirst) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		return h.around([]redis.Cmder{c}, func() error { return next(ctx, c) })
	}
}
func (h *holdFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.around(cmds, func() error { return next(ctx, cmds) })
	}
}

// orderSink records the terminals commands went to, in order.
type orderSink struct {
	benchSink
	log orderLog
}

func (s *orderSink) SendTerminal(deviceID string, _ []TerminalCommand) {
	s.log.add(int(deviceID[1] - '0'))
}

// Two sales of one API key go to Redis side by side: the second is sent,
// applied and answered while the first is still on its way, so a slow
// round trip does not make every commit of the key behind it wait for it
// in turn. Their effects still come in the order the commits were made:
// the first terminal's command, then the second's, though the second
// commit came back first.
func TestCommitsOfOneKeyOverlap(t *testing.T) {
	r := redistest.New(t)
	ks := keys.Space{Prefix: r.Prefix}
	hook := &holdFirst{first: ks.Current("m1", "T1"), second: ks.Current("m1", "T2"), patience: 10 * time.Second,
		entered: make(chan struct{}), answered: make(chan struct{})}
	r.Client.AddHook(hook)
	sink := &orderSink{}
	e := NewEngine(Options{Store: NewStore(r.Client, ks), Terminals: benchTerminals{}, Sink: sink, Logger: zerolog.Nop()})
	amount := int64(500)
	sale := func(term string) error {
		ctx := WithReply(context.Background(), func(Result) {})
		_, err := e.Create(ctx, CreateInput{MerchantID: "m1", APIKeyID: "pk1",
			Req: &protocol.PaymentRequest{TerminalID: term, AmountMinor: &amount, Currency: "USD", Reference: "overlap-" + term}})
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- sale("T1") }()
	<-hook.entered // the first commit has its place and is on its way
	go func() { errs <- sale("T2") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !hook.overlapped {
		t.Fatal("the second sale's commit was not applied while the first's was on its way")
	}
	if got := sink.log.list(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("commands went to terminals %v, want [1 2] (the order the commits were made)", got)
	}
}

// holdCommit holds every commit carrying key until release is closed;
// held closes when the first is seen. Its see is a redistest.SeeHook.
type holdCommit struct {
	key           string
	held, release chan struct{}
	once          sync.Once
}

func (h *holdCommit) see(cmds ...redis.Cmder) {
	for _, c := range cmds {
		if (c.Name() == "evalsha" || c.Name() == "eval") && strings.Contains(fmt.Sprint(c.Args()...), h.key) {
			h.once.Do(func() { close(h.held) })
			<-h.release
			return
		}
	}
}

// CarriedOut, which an outbox read calls before sending what it read,
// returns only once the key's commits that had started have carried out
// their effects (a reply goes before what a read finds of its commit), or
// when its context ends.
func TestCarriedOutWaitsForStartedCommits(t *testing.T) {
	r := redistest.New(t)
	ks := keys.Space{Prefix: r.Prefix}
	hook := &holdCommit{key: ks.Current("m1", "T1"), held: make(chan struct{}), release: make(chan struct{})}
	r.Client.AddHook(redistest.SeeHook(hook.see))
	release := sync.OnceFunc(func() { close(hook.release) })
	t.Cleanup(release) // a failed test does not leave the sale held
	sink := &orderSink{}
	e := NewEngine(Options{Store: NewStore(r.Client, ks), Terminals: benchTerminals{}, Sink: sink, Logger: zerolog.Nop()})
	amount := int64(700)
	saleDone := make(chan error, 1)
	go func() {
		_, err := e.Create(WithReply(context.Background(), func(Result) {}), CreateInput{MerchantID: "m1", APIKeyID: "pk1",
			Req: &protocol.PaymentRequest{TerminalID: "T1", AmountMinor: &amount, Currency: "USD", Reference: "carried-1"}})
		saleDone <- err
	}()
	<-hook.held // the sale's commit has started and is on its way

	// What the sale had carried out when CarriedOut returned: nothing, if
	// it returned while the commit was held.
	carried := make(chan []int, 1)
	go func() {
		e.CarriedOut(context.Background(), "m1", "pk1")
		carried <- sink.log.list()
	}()
	notReturned := func() {
		select {
		case got := <-carried:
			t.Fatalf("CarriedOut returned while the sale's commit was held (commands sent to terminals %v)", got)
		default:
		}
	}
	// Released only once CarriedOut waits in the key's line (the sale
	// waits there only after its commit comes back), so that a CarriedOut
	// that did not wait would be seen returning first.
	line := &e.order.lines[stripe("m1", "pk1")]
	kit.Eventually(t, "CarriedOut waiting for the sale", func() bool {
		notReturned()
		e.order.mu.Lock()
		defer e.order.mu.Unlock()
		return line.moved != nil
	})

	// A context that ends lets the wait go, and leaves the other waiting.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.CarriedOut(ctx, "m1", "pk1")
	notReturned()
	release()
	if got := <-carried; !slices.Equal(got, []int{1}) {
		t.Fatalf("when CarriedOut returned the sale had sent commands to terminals %v, want [1]", got)
	}
	if err := <-saleDone; err != nil {
		t.Fatal(err)
	}
}

// One commit that writes to two outboxes, interleaved, raises each
// counter once by its own count, and numbers the entries as one raise per
// entry would.
func TestCommitCountsEachOutboxOnce(t *testing.T) {
	r := redistest.New(t)
	s := NewStore(r.Client, keys.Space{Prefix: r.Prefix})
	a, b := r.Prefix+"out-a", r.Prefix+"out-b"
	for round, want := range [][]int64{{1, 1, 2}, {3, 2, 4}} {
		c := newCommit()
		c.xadd(a, a+"-seq", []byte(`{"n":1}`), savedTxn{})
		c.xadd(b, b+"-seq", []byte(`{"n":2}`), savedTxn{})
		c.xadd(a, a+"-seq", []byte(`{"n":3}`), savedTxn{})
		if c.ops[3] != 2 || c.ops[8] != 1 || c.ops[13] != 0 {
			t.Fatalf("counts carried %v, %v, %v; want 2, 1, 0", c.ops[3], c.ops[8], c.ops[13])
		}
		sent, err := c.exec(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, x := range sent {
			got = append(got, x.seq)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: numbers %v, want %v", round, got, want)
		}
	}
}

// Commits with places in two lines, taken in either order by many
// goroutines at once, never wait for each other in a circle: every turn
// comes.
func TestOrderingCrossedKeysUnderLoad(t *testing.T) {
	var o ordering
	keySets := [][]string{{"pk1", "pk2"}, {"pk2", "pk1"}, {"pk1"}, {"pk2"}}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				p := o.take("m1", keySets[(g+i)%len(keySets)])
				if i%3 == 0 {
					p.leave() // some give their places up
					continue
				}
				p.wait()
				p.done()
			}
		}()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("turns stopped coming: commits wait for each other")
	}
	for _, k := range []string{"pk1", "pk2"} {
		if l := &o.lines[stripe("m1", k)]; l.served != l.next || l.left != nil {
			t.Fatalf("line of %s served %d of %d, %d left over", k, l.served, l.next, len(l.left))
		}
	}
}
