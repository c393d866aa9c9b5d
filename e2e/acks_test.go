package e2e

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/keys"
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

// isAck recognises the ack script: EVALSHA sha 2 <outbox> <ack> <id>.
func isAck(cmd redis.Cmder) bool {
	a := cmd.Args()
	if cmd.Name() != "evalsha" || len(a) != 6 {
		return false
	}
	k, _ := a[3].(string)
	return strings.Contains(k, ":outbox:")
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

func (g *ackGate) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (g *ackGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		g.hold(cmd)
		return next(ctx, cmd)
	}
}

func (g *ackGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		g.hold(cmds...)
		return next(ctx, cmds)
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
	e.Redis.Client.AddHook(gate)
	if err := pos.Ack(ctx(t), id); err != nil {
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
	cursor, gerr := e.Redis.Client.Get(ctx(t), keys.Space{Prefix: e.Redis.Prefix}.Ack("m1", "pk1")).Result()
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
