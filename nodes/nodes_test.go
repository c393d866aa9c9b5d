package nodes

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
)

// TestMain fails the package's tests if a goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a Handler that remembers what it was told.
type recorder struct {
	mu       sync.Mutex
	msgs     []Message
	dead     []string
	declared int
	ticks    int
	resyncs  int
	republ   int
}

func (r *recorder) Message(m Message) { r.mu.Lock(); r.msgs = append(r.msgs, m); r.mu.Unlock() }
func (r *recorder) Resync()           { r.mu.Lock(); r.resyncs++; r.mu.Unlock() }
func (r *recorder) NodeDead(id string) {
	r.mu.Lock()
	r.dead = append(r.dead, id)
	r.mu.Unlock()
}
func (r *recorder) DeclaredDead() { r.mu.Lock(); r.declared++; r.mu.Unlock() }
func (r *recorder) Tick()         { r.mu.Lock(); r.ticks++; r.mu.Unlock() }
func (r *recorder) Republish()    { r.mu.Lock(); r.republ++; r.mu.Unlock() }
func (r *recorder) Counts() Counts {
	return Counts{POS: 1, Terminal: 2}
}

func (r *recorder) messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

func (r *recorder) deadNodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dead...)
}

// redisAndClock is a test Redis and a fake clock for the nodes on it.
func redisAndClock(t *testing.T) (*redistest.Redis, *clock.Fake) {
	return redistest.New(t), clock.NewFake(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
}

// startNode starts node id on r's Redis and clk, closed when t ends.
func startNode(t *testing.T, r *redistest.Redis, clk clock.Clock, id string) (*Node, *recorder) {
	t.Helper()
	n := New(Options{Redis: r.Client, Keys: keys.Space{Prefix: r.Prefix}, ID: id, Address: "127.0.0.1:0",
		Timeout: 3 * time.Second, Clock: clk, Logger: zerolog.Nop()})
	h := &recorder{}
	if err := n.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n, h
}

func TestBusCarriesMessagesInOrder(t *testing.T) {
	r, clk := redisAndClock(t)
	a, _ := startNode(t, r, clk, "a")
	_, hb := startNode(t, r, clk, "b")
	_, hc := startNode(t, r, clk, "c")
	for i := range 50 {
		a.Send("b", Message{Type: "x", Epoch: int64(i)})
	}
	a.Broadcast(Message{Type: "all"})
	kit.Eventually(t, "b hears 50 messages and the broadcast", func() bool { return len(hb.messages()) == 51 })
	for i, m := range hb.messages()[:50] {
		if m.Epoch != int64(i) || m.From != "a" {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	kit.Eventually(t, "c hears only the broadcast", func() bool { return len(hc.messages()) == 1 })
	if m := hc.messages()[0]; m.Type != "all" {
		t.Fatalf("c heard %+v", m)
	}
}

func TestDeadNodeIsReapedOnce(t *testing.T) {
	r, clk := redisAndClock(t)
	a, ha := startNode(t, r, clk, "a")
	b, hb := startNode(t, r, clk, "b")
	c, _ := startNode(t, r, clk, "c")
	list, err := a.Nodes(kit.Ctx(t))
	if err != nil || len(list) != 3 || list[2].ID != "c" || list[2].Connections.Terminal != 2 {
		t.Fatalf("nodes: %+v %v", list, err)
	}
	c.Close() // c stops heartbeating
	clk.Advance(5 * time.Second)
	// The claims are made in the heartbeats (inside Advance); the releases
	// run on each node's worker.
	var got []string
	kit.Eventually(t, "c released", func() bool {
		got = append(ha.deadNodes(), hb.deadNodes()...)
		return len(got) > 0
	})
	if len(got) != 1 || got[0] != "c" {
		t.Fatalf("released by a and b: %v (want c, once)", got)
	}
	if list, _ := b.Nodes(kit.Ctx(t)); len(list) != 2 {
		t.Fatalf("after the release: %+v", list)
	}
	if live := a.LiveIDs(); live["c"] || !live["b"] {
		t.Fatal("a's view of the live nodes is wrong")
	}
}

func TestNodeTakenForDeadFindsOut(t *testing.T) {
	r, clk := redisAndClock(t)
	a, _ := startNode(t, r, clk, "a")
	_, hb := startNode(t, r, clk, "b")
	// Another node released b (b was paused past node_timeout).
	if err := r.Client.HDel(kit.Ctx(t), a.Keys().Nodes(), "b").Err(); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	hb.mu.Lock()
	declared := hb.declared
	hb.mu.Unlock()
	if declared != 1 {
		t.Fatalf("b told it was taken for dead %d times", declared)
	}
	if list, _ := a.Nodes(kit.Ctx(t)); len(list) != 2 {
		t.Fatalf("b did not join again: %+v", list)
	}
}

func TestDeviceRecordFencing(t *testing.T) {
	r, clk := redisAndClock(t)
	a, _ := startNode(t, r, clk, "a")
	b, _ := startNode(t, r, clk, "b")
	ctx := kit.Ctx(t)
	now := clk.Now()
	old, e1, err := a.DeviceUp(ctx, "m", "T1", "c1", now)
	if err != nil || old.Status != "" || e1 != 1 {
		t.Fatalf("first up: %+v %d %v", old, e1, err)
	}
	// b takes the device over: a's late drop of c1 changes nothing.
	old, e2, _ := b.DeviceUp(ctx, "m", "T1", "c2", now)
	if old.Node != "a" || old.Conn != "c1" || old.Status != "online" || e2 <= e1 {
		t.Fatalf("takeover saw %+v epoch %d", old, e2)
	}
	if e, _ := a.DeviceDown(ctx, "m", "T1", "c1", now.Add(time.Minute), now); e != 0 {
		t.Fatalf("a's stale drop applied (epoch %d)", e)
	}
	e3, _ := b.DeviceDown(ctx, "m", "T1", "c2", now.Add(time.Minute), now)
	if e3 <= e2 {
		t.Fatalf("b's drop: epoch %d", e3)
	}
	recs, _ := a.Devices(ctx, []DeviceRef{{"m", "T1"}, {"m", "none"}})
	if recs[0].Status != "reconnecting" || !recs[0].GraceUntil.Equal(now.Add(time.Minute).Truncate(time.Millisecond)) || recs[1].Status != "" {
		t.Fatalf("records: %+v", recs)
	}
	// Not due yet; then due: of two nodes, one turns it offline.
	if e, _ := a.ExpireGrace(ctx, "m", "T1", now); e != 0 {
		t.Fatal("expired early")
	}
	later := now.Add(2 * time.Minute)
	ea, _ := a.ExpireGrace(ctx, "m", "T1", later)
	eb, _ := b.ExpireGrace(ctx, "m", "T1", later)
	if (ea == 0) == (eb == 0) {
		t.Fatalf("expiry applied by a (%d) and b (%d): want exactly one", ea, eb)
	}
	if due, _ := a.DueGraces(ctx, []string{"m"}, later); len(due["m"]) != 0 {
		t.Fatalf("still due: %v", due)
	}
	// Demote checks the epoch it read.
	_, e5, _ := a.DeviceUp(ctx, "m", "T1", "c3", now)
	if e, _ := b.Demote(ctx, "m", "T1", "a", e5-1, now.Add(time.Minute)); e != 0 {
		t.Fatal("demoted on a stale epoch")
	}
	if e, _ := b.Demote(ctx, "m", "T1", "a", e5, now.Add(time.Minute)); e <= e5 {
		t.Fatalf("demote: epoch %d", e)
	}
	recs, _ = a.Devices(ctx, []DeviceRef{{"m", "T1"}})
	if recs[0].Status != "reconnecting" || recs[0].Node != "" {
		t.Fatalf("after demote: %+v", recs[0])
	}
}

func TestKeyClaimsCountDisplacements(t *testing.T) {
	r, clk := redisAndClock(t)
	a, _ := startNode(t, r, clk, "a")
	b, _ := startNode(t, r, clk, "b")
	ctx := kit.Ctx(t)
	now := clk.Now()
	if n, c, f, err := a.ClaimKey(ctx, "m", "pk", "c1", now, time.Minute, false); n != "" || c != "" || f != 0 || err != nil {
		t.Fatalf("first claim: %q %q %d %v", n, c, f, err)
	}
	n, c, f, _ := b.ClaimKey(ctx, "m", "pk", "c2", now.Add(time.Second), time.Minute, false)
	if n != "a" || c != "c1" || f != 1 {
		t.Fatalf("second claim: %q %q %d", n, c, f)
	}
	_, _, f, _ = a.ClaimKey(ctx, "m", "pk", "c3", now.Add(2*time.Second), time.Minute, false)
	_, _, f2, _ := b.ClaimKey(ctx, "m", "pk", "c4", now.Add(3*time.Second), time.Minute, false)
	if f != 2 || f2 != 3 {
		t.Fatalf("displacements counted %d, %d", f, f2)
	}
	// Outside the window the count starts again.
	if _, _, f, _ := a.ClaimKey(ctx, "m", "pk", "c5", now.Add(2*time.Minute), time.Minute, false); f != 1 {
		t.Fatalf("after the window: %d", f)
	}
	// A release by a connection that no longer holds the key changes nothing.
	a.ReleaseKey("m", "pk", "a", "c3")
	a.Flush(5 * time.Second)
	if h, _ := b.KeyHolders(ctx, []KeyRef{{"m", "pk"}}); h[0] != "a" {
		t.Fatalf("holder %q", h[0])
	}
	a.ReleaseKey("m", "pk", "a", "c5")
	a.Flush(5 * time.Second)
	if h, _ := b.KeyHolders(ctx, []KeyRef{{"m", "pk"}}); h[0] != "" {
		t.Fatalf("holder after release %q", h[0])
	}
}

func TestDeadlineClaimedOnce(t *testing.T) {
	r, clk := redisAndClock(t)
	a, _ := startNode(t, r, clk, "a")
	b, _ := startNode(t, r, clk, "b")
	ctx := kit.Ctx(t)
	at := clk.Now()
	okA, err := a.ClaimDeadline(ctx, "m", "txn_1|payment", at)
	okB, _ := b.ClaimDeadline(ctx, "m", "txn_1|payment", at)
	again, _ := a.ClaimDeadline(ctx, "m", "txn_1|payment", at)
	if err != nil || !okA || okB || !again {
		t.Fatalf("claims a=%v b=%v a again=%v (%v)", okA, okB, again, err)
	}
	if moved, _ := b.ClaimDeadline(ctx, "m", "txn_1|payment", at.Add(time.Second)); !moved {
		t.Fatal("a moved deadline is a new claim")
	}
}

func TestLostMessagesMakeEveryoneResync(t *testing.T) {
	r, clk := redisAndClock(t)
	a, ha := startNode(t, r, clk, "a")
	_, hb := startNode(t, r, clk, "b")
	a.bus.mu.Lock()
	a.bus.lost = true // as after a batch Redis refused
	a.bus.mu.Unlock()
	clk.Advance(time.Second)
	kit.Eventually(t, "b resyncs", func() bool {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		return hb.resyncs == 1
	})
	ha.mu.Lock()
	defer ha.mu.Unlock()
	if ha.republ != 1 || ha.resyncs != 0 {
		t.Fatalf("a republished %d times, resynced %d", ha.republ, ha.resyncs)
	}
}
