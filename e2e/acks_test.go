package e2e

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

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

// An ack is applied off the reader, so the POS's next request does not wait
// for it; but a reconnect's replay waits for acks still being applied, so an
// acknowledged message is never replayed because its ack was slow.
func TestReplayWaitsForAcksStillBeingApplied(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	pos := e.pos("pk1")
	id := sell(t, pos, "T1", 500, "ack-gate-1").Transaction.ID
	startPayment(t, term, id)
	termSend(t, term, "commandReceived", id, nil)
	approve(t, term, id)
	// The paymentComplete is the newest message: its id acks everything.
	done := posEvent(t, pos, protocol.ActionPaymentComplete, id).MessageID

	gate := newAckGate()
	e.Redis.Client.AddHook(gate)
	if err := pos.Ack(ctx(t), done); err != nil {
		t.Fatal(err)
	}
	<-gate.blocked
	// The ack is held in Redis's client; the reader goes on: a request sent
	// after it is answered now.
	send(t, pos, "listTerminals", map[string]any{"requestId": "while-acking"})
	read(t, pos, "terminals")

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
