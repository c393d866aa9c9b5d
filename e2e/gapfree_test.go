package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// onlineTerminals says every terminal is online, for an engine of the
// test's own beside the App's.
type onlineTerminals struct{}

func (onlineTerminals) ResolveTerminal(_, id string) (string, bool) { return id, true }
func (onlineTerminals) TerminalLive(string) (session.TerminalStatus, string, time.Time) {
	return protocol.TerminalOnline, "conn_elsewhere", time.Time{}
}

// TestMessagesWrittenElsewhereReachTheLivePOSInOrder: a message the hub
// was never handed (another writer committed it: another process, or a
// commit of its own whose answer was lost) still reaches the live POS,
// before the next one the hub commits, so that the POS's ack of that one
// can never cover a message it was not sent (docs/ops.md#when-redis-stalls-restarts-or-fails-over).
func TestMessagesWrittenElsewhereReachTheLivePOSInOrder(t *testing.T) {
	e := newEnv(t)
	pos, term := e.pos("pk1"), e.terminal("T1")
	id := pay(t, pos, "T1", 1250, "elsewhere").Transaction.ID
	startPayment(t, term, id)

	other := session.NewEngine(session.Options{Store: session.NewStore(e.Redis.Client, keys.Space{Prefix: e.Redis.Prefix}),
		Terminals: onlineTerminals{}, Clock: e.Clock, Logger: zerolog.Nop()})
	if err := other.TerminalEvent(context.Background(), "m1", "T1", &protocol.CommandReceived{TransactionID: id}); err != nil {
		t.Fatal(err)
	}
	termSend(t, term, protocol.ActionPaymentProgress, id, map[string]any{"stage": "card_presented"})

	first := event(t, read(t, pos, protocol.ActionPaymentStatusUpdate))
	second := event(t, read(t, pos, protocol.ActionPaymentStatusUpdate))
	if first.Transaction.Status != protocol.StatusDispatched || second.Transaction.Status != protocol.StatusInProgress {
		t.Fatalf("the POS got %s v%d then %s v%d, want DISPATCHED (written elsewhere) then IN_PROGRESS",
			first.Transaction.Status, first.Version, second.Transaction.Status, second.Version)
	}
}
