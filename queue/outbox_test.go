package queue

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redistest"
)

// outboxOf returns an Outbox whose stream of merchant "m", key "k" holds n
// messages {"action":"x","n":i}, and their ids in order.
func outboxOf(t *testing.T, n int) (*Outbox, []string) {
	t.Helper()
	r := redistest.New(t)
	ks := keys.Space{Prefix: r.Prefix}
	var ids []string
	for i := 0; i < n; i++ {
		id, err := r.Client.XAdd(context.Background(), &redis.XAddArgs{Stream: ks.Outbox("m", "k"), Values: []any{"m", `{"action":"x","n":` + string(rune('0'+i)) + `}`}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return NewOutbox(r.Client, ks), ids
}

func TestAckIsCumulativeTrimsAndRefusesUnknownIDs(t *testing.T) {
	o, ids := outboxOf(t, 5)
	ctx := context.Background()
	if moved, err := o.Ack(ctx, "m", "k", ids[2]); err != nil || !moved {
		t.Fatalf("ack %s: moved=%v err=%v", ids[2], moved, err)
	}
	// Cumulative: the three first are gone, the rest stay, in order.
	rest, err := o.After(ctx, "m", "k", "0-0", 100)
	if err != nil || len(rest) != 2 || rest[0].ID != ids[3] || rest[1].ID != ids[4] {
		t.Fatalf("after ack: %+v %v", rest, err)
	}
	if n, _ := o.Depth(ctx, "m", "k"); n != 2 {
		t.Fatalf("depth %d after acking 3 of 5, want 2", n)
	}
	// An older ack moves nothing; the cursor never goes back.
	if moved, err := o.Ack(ctx, "m", "k", ids[0]); err != nil || moved {
		t.Fatalf("older ack: moved=%v err=%v", moved, err)
	}
	if c, _ := o.Cursor(ctx, "m", "k"); c != ids[2] {
		t.Fatalf("cursor %s, want %s", c, ids[2])
	}
	// Beyond the newest entry, or not an id at all: refused.
	for _, bad := range []string{"99999999999999-0", "nope", "1-", ""} {
		if _, err := o.Ack(ctx, "m", "k", bad); err != ErrUnknownID {
			t.Fatalf("ack %q: %v, want ErrUnknownID", bad, err)
		}
	}
	// Frame puts the messageId first and keeps the rest.
	if f := string(rest[0].Frame()); f != `{"messageId":"`+ids[3]+`","action":"x","n":3}` {
		t.Fatalf("frame = %s", f)
	}
}

// TestAckForwardMovesTheCursorAndTrims: the plain-command ack stores the
// cursor and trims what it acknowledges, exactly as the script does, and
// the script's checks hold after it (an older ack moves nothing).
func TestAckForwardMovesTheCursorAndTrims(t *testing.T) {
	o, ids := outboxOf(t, 4)
	ctx := context.Background()
	if err := o.AckForward(ctx, "m", "k", ids[1]); err != nil {
		t.Fatal(err)
	}
	if c, _ := o.Cursor(ctx, "m", "k"); c != ids[1] {
		t.Fatalf("cursor %s, want %s", c, ids[1])
	}
	rest, err := o.After(ctx, "m", "k", "0-0", 100)
	if err != nil || len(rest) != 2 || rest[0].ID != ids[2] || rest[1].ID != ids[3] {
		t.Fatalf("after AckForward of the second of 4: %+v %v, want the last two", rest, err)
	}
	if moved, err := o.Ack(ctx, "m", "k", ids[0]); err != nil || moved {
		t.Fatalf("older ack after AckForward: moved=%v err=%v", moved, err)
	}
	if moved, err := o.Ack(ctx, "m", "k", ids[3]); err != nil || !moved {
		t.Fatalf("newer ack after AckForward: moved=%v err=%v", moved, err)
	}
	if n, _ := o.Depth(ctx, "m", "k"); n != 0 {
		t.Fatalf("depth %d after acking all, want 0", n)
	}
	for _, bad := range []string{"nope", "1-", "-1", ""} {
		if err := o.AckForward(ctx, "m", "k", bad); err != ErrUnknownID {
			t.Fatalf("AckForward %q: %v, want ErrUnknownID", bad, err)
		}
	}
}
