package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
)

// ackGate holds the outbox ack scripts in flight until it is opened, so a
// test can act while an ack has been received but not yet applied.
type ackGate struct {
	once    sync.Once
	blocked chan struct{} // closed when the first ack is held
	open    chan struct{}
}

func newAckGate() *ackGate {
	return &ackGate{blocked: make(chan struct{}), open: make(chan struct{})}
}

// isAck recognises an ack's Redis work: the script (EVALSHA sha 2
// <outbox> <ack> <id>) or, for an ack the connection vouches for, the
// plain SET of the cursor (queue.Outbox.AckForward).
func isAck(cmd redis.Cmder) bool {
	a := cmd.Args()
	switch {
	case cmd.Name() == "evalsha" && len(a) == 6:
		k, _ := a[3].(string)
		return strings.Contains(k, ":outbox:")
	case cmd.Name() == "set" && len(a) == 3:
		k, _ := a[1].(string)
		return strings.Contains(k, ":ack:")
	}
	return false
}

func (g *ackGate) hold(cmds ...redis.Cmder) {
	for _, c := range cmds {
		if isAck(c) {
			g.once.Do(func() { close(g.blocked) })
			<-g.open
			return
		}
	}
}

// ackedSale runs a sale to its paymentComplete on pos and returns the
// complete's message id, the newest: acking it acks everything.
func ackedSale(t *testing.T, pos *client.Conn, term *client.Conn, ref string) string {
	t.Helper()
	id := sell(t, pos, "T1", 500, ref).Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	approve(t, term, id)
	return posEvent(t, pos, protocol.ActionPaymentComplete, id).MessageID
}

// holdAck sends pos's ack of id and returns once the hub's Redis client
// holds its script, not yet applied, until the returned gate is opened.
func holdAck(t *testing.T, e *env, pos *client.Conn, id string) *ackGate {
	t.Helper()
	gate := newAckGate()
	e.Redis.Client.AddHook(redistest.SeeHook(gate.hold))
	if err := pos.Ack(kit.Ctx(t), id); err != nil {
		t.Fatal(err)
	}
	<-gate.blocked
	return gate
}

// An ack is applied off the reader, beside the POS's next request; but the
// reply to that request waits for it, so a POS that has its reply can rely
// on its ack being stored (even if the hub crashes right after).
func TestReplyWaitsForAckBeforeIt(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	done := ackedSale(t, pos, term, "ack-reply-1")
	gate := holdAck(t, e, pos, done)
	send(t, pos, "listTerminals", map[string]any{"requestId": "after-the-ack"})
	// While the ack is held no reply may come. (A correct hub never sends
	// one, so this cannot fail spuriously; the window only bounds how long
	// a wrong one is given to show itself.)
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	m, err := pos.Read(short)
	cancel()
	if err == nil {
		t.Fatalf("got %s while the ack before it was still being applied", m.Action)
	}
	// The read's deadline closed that client connection; a new one gets the
	// reply path checked again below, after the ack is let through.
	close(gate.open)
	pos2 := e.pos("pk1")
	cursor, gerr := e.Redis.Client.Get(kit.Ctx(t), keys.Space{Prefix: e.Redis.Prefix}.Ack("m1", "pk1")).Result()
	if gerr != nil || cursor != done {
		t.Fatalf("ack cursor %q (%v) once the next connection is up, want %q", cursor, gerr, done)
	}
	send(t, pos2, "listTerminals", map[string]any{"requestId": "later"})
	read(t, pos2, "terminals")
}

// A reconnect's replay waits for acks still being applied, so an
// acknowledged message is never replayed because its ack was slow.
func TestReplayWaitsForAcksStillBeingApplied(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	gate := holdAck(t, e, pos, ackedSale(t, pos, term, "ack-gate-1"))

	// A reconnect now must not replay what was acked, even though the ack
	// has not been applied when the new connection's replay starts.
	pos2 := e.pos("pk1")
	close(gate.open)
	// A new sale's first durable message must be the first one pos2 sees:
	// had the replay read the cursor before the ack, the old sale's
	// messages would come first.
	id2 := sell(t, pos2, "T1", 700, "ack-gate-2").Transaction.ID
	startPayment(t, term, id2)
	termSend(t, term, "commandReceived", id2, nil)
	for {
		m := next(t, pos2)
		if m.MessageID() == "" {
			continue
		}
		ev := event(t, m)
		if ev.TransactionID != id2 {
			t.Fatalf("after an acked reconnect pos2 first got %s of %s, want only messages of the new sale %s", ev.Action, ev.TransactionID, id2)
		}
		if ev.Action != protocol.ActionPaymentStatusUpdate {
			t.Fatalf("first durable message of the new sale: %s, want paymentStatusUpdate", ev.Action)
		}
		break
	}
}

// ackCounter counts the ack work a hub's Redis client sends: ack scripts
// and plain SETs of a cursor (see isAck).
type ackCounter struct {
	mu             sync.Mutex
	scripts, plain int
}

func (a *ackCounter) count(cmds ...redis.Cmder) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range cmds {
		if isAck(c) {
			if c.Name() == "evalsha" {
				a.scripts++
			} else {
				a.plain++
			}
		}
	}
}

func (a *ackCounter) get() (scripts, plain int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.scripts, a.plain
}

// An ack of a message the connection delivered, newer than the cursor, is
// stored with plain commands; one the connection cannot vouch for (newer
// than anything it was sent) goes through the script, which refuses it.
// Either way the cursor and the stream end as the script alone would
// leave them, also on a later connection.
func TestAckOfADeliveredMessageSkipsTheScript(t *testing.T) {
	e := newEnv(t)
	ks := keys.Space{Prefix: e.Redis.Prefix}
	counter := &ackCounter{}
	e.Redis.Client.AddHook(redistest.SeeHook(counter.count))
	term := e.terminal("T1")
	cursor := func() string {
		t.Helper()
		v, err := e.Redis.Client.Get(kit.Ctx(t), ks.Ack("m1", "pk1")).Result()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for round, ref := range []string{"fast-1", "fast-2"} {
		pos := e.pos("pk1") // the second connection knows the cursor from its replay
		done := ackedSale(t, pos, term, ref)
		s0, p0 := counter.get()
		if err := pos.Ack(kit.Ctx(t), done); err != nil {
			t.Fatal(err)
		}
		// The reply to a later request waits for the ack (acks.go).
		send(t, pos, "listTerminals", map[string]any{"requestId": "after-ack"})
		read(t, pos, "terminals")
		if s, p := counter.get(); s != s0 || p != p0+1 {
			t.Fatalf("round %d: ack of a delivered message: %d scripts and %d plain SETs, want 0 and 1", round, s-s0, p-p0)
		}
		if c := cursor(); c != done {
			t.Fatalf("round %d: cursor %s, want %s", round, c, done)
		}
		if n, err := e.App.Outbox.Depth(kit.Ctx(t), "m1", "pk1"); err != nil || n != 0 {
			t.Fatalf("round %d: outbox depth %d (%v) after acking the newest message, want 0", round, n, err)
		}
		// Beyond what this connection was sent: the script decides, and
		// the cursor stays.
		send(t, pos, "ack", map[string]any{"requestId": "too-new", "messageId": "99999999999999-0"})
		if m := read(t, pos, "error"); m.Err() == nil || m.Err().Code != protocol.CodeInvalidRequest || m.Err().Field != "messageId" {
			t.Fatalf("round %d: ack of an id never sent: %s, want invalid_request on messageId", round, m.Raw)
		}
		if s, _ := counter.get(); s != s0+1 {
			t.Fatalf("round %d: ack of an id never sent made %d script calls, want 1", round, s-s0)
		}
		if c := cursor(); c != done {
			t.Fatalf("round %d: cursor %s after a refused ack, want %s", round, c, done)
		}
		_ = pos.CloseNow()
	}
}
