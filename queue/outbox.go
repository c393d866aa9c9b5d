// Package queue is termhub's durable delivery on Redis streams: the per-API-key
// outbox of POS messages (appended before they are sent, replayed after the
// acknowledged cursor, acknowledged cumulatively, trimmed by retention). It
// moves opaque JSON and knows nothing of what a message means.
package queue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redisx"
)

// Entry is one durable message: its stream id and its JSON without the
// messageId (Frame adds it).
type Entry struct {
	ID   string
	Data []byte
	// Seq is the entry's number in its outbox's count of entries ever
	// appended (keys.OutboxSeq), set for entries a commit has just written:
	// a connection that sent the entry numbered n knows that n+1 is next.
	// 0 when unknown (entries read back from the stream).
	Seq int64
}

// Frame returns the message as sent: its JSON object with "messageId" first.
func (e Entry) Frame() []byte {
	out := make([]byte, 0, len(e.Data)+len(e.ID)+16)
	out = append(out, `{"messageId":"`...)
	out = append(out, e.ID...)
	out = append(out, `",`...)
	return append(out, e.Data[1:]...)
}

// ErrUnknownID is returned when an ack names an id after the newest message.
var ErrUnknownID = errors.New("queue: messageId was never sent")

// Outbox reads and acknowledges the API keys' streams. Appending happens in
// the session store's atomic commit, in the same script as the state change.
type Outbox struct {
	rdb   redis.UniversalClient
	batch *redisx.Batcher // acks of concurrent POS connections share pipelines
	keys  keys.Space
}

// NewOutbox returns an Outbox on rdb.
func NewOutbox(rdb redis.UniversalClient, ks keys.Space) *Outbox {
	return &Outbox{rdb: rdb, batch: redisx.NewBatcher(rdb, 0), keys: ks}
}

// Cursor returns the API key's acknowledged cursor ("0-0" when none).
func (o *Outbox) Cursor(ctx context.Context, merchantID, apiKey string) (string, error) {
	v, err := o.rdb.Get(ctx, o.keys.Ack(merchantID, apiKey)).Result()
	if errors.Is(err, redis.Nil) {
		return "0-0", nil
	}
	return v, err
}

// After returns up to count entries with ids after the given one, oldest first.
func (o *Outbox) After(ctx context.Context, merchantID, apiKey, after string, count int64) ([]Entry, error) {
	msgs, err := o.rdb.XRangeN(ctx, o.keys.Outbox(merchantID, apiKey), "("+after, "+", count).Result()
	if err != nil {
		return nil, err
	}
	return entries(msgs), nil
}

// Read returns up to count entries with ids after the given one, oldest
// first, and the outbox's count of entries ever appended as it stood when
// they were read (one MULTI, so the two agree): when fewer than count came
// back, the newest entry counted is among them, or at or before after.
// A connection that has sent what Read returned then knows the number of
// the next entry (Entry.Seq), and can tell a gap.
func (o *Outbox) Read(ctx context.Context, merchantID, apiKey, after string, count int64) ([]Entry, int64, error) {
	pipe := o.rdb.TxPipeline()
	rng := pipe.XRangeN(ctx, o.keys.Outbox(merchantID, apiKey), "("+after, "+", count)
	seq := pipe.Get(ctx, o.keys.OutboxSeq(merchantID, apiKey))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, err
	}
	n, err := seq.Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, err
	}
	return entries(rng.Val()), n, nil
}

// entries turns stream messages into Entries, skipping any without a body.
func entries(msgs []redis.XMessage) []Entry {
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		s, _ := m.Values["m"].(string)
		if s == "" {
			continue
		}
		out = append(out, Entry{ID: m.ID, Data: []byte(s)})
	}
	return out
}

// ackScript moves the cursor forward only (acks are cumulative and may
// arrive out of order) and refuses an id newer than the newest entry, so a
// bad ack can never hide messages not yet written. It then trims what is
// acknowledged.
var ackScript = redis.NewScript(`
local function cmp(a, b)
  local am, as = string.match(a, "^(%d+)-(%d+)$")
  local bm, bs = string.match(b, "^(%d+)-(%d+)$")
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
local last = redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", 1)
local newest = "0-0"
if #last > 0 then newest = last[1][1] end
local lastAcked = redis.call("GET", KEYS[2]) or "0-0"
if cmp(ARGV[1], newest) > 0 and cmp(ARGV[1], lastAcked) > 0 then return -1 end
if cmp(ARGV[1], lastAcked) > 0 then
  redis.call("SET", KEYS[2], ARGV[1])
  -- MINID keeps ids >= its argument: trim to the id right after the ack.
  local ms, seq = string.match(ARGV[1], "^(%d+)-(%d+)$")
  redis.call("XTRIM", KEYS[1], "MINID", ms .. "-" .. string.format("%d", tonumber(seq) + 1))
  return 1
end
return 0
`)

// ValidID reports whether id has the form of a stream id ("<ms>-<seq>").
func ValidID(id string) bool {
	_, _, ok := parseID(id)
	return ok
}

// parseID splits a stream id into its two numbers.
func parseID(id string) (ms, seq uint64, ok bool) {
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// Ack acknowledges id and every earlier message of the API key. It reports
// whether the cursor moved.
func (o *Outbox) Ack(ctx context.Context, merchantID, apiKey, id string) (bool, error) {
	if !ValidID(id) {
		return false, ErrUnknownID
	}
	n, err := redisx.RunScript(ctx, o.batch, o.rdb, ackScript, []string{o.keys.Outbox(merchantID, apiKey), o.keys.Ack(merchantID, apiKey)}, id).Int()
	if err != nil {
		return false, err
	}
	if n < 0 {
		return false, ErrUnknownID
	}
	return n == 1, nil
}

// AckForward acknowledges id and every earlier message of the API key, for
// a caller that knows what Ack's script would otherwise check: that id is
// no newer than the newest message (the caller delivered it) and newer
// than the stored cursor (the caller stored that cursor itself, and
// nothing else acks the key meanwhile: one POS connection per key). It
// costs two plain commands in one pipeline (SET, XTRIM) instead of a
// script, a fraction of the script's cost on Redis, most of which is the
// script reading the newest entry whole. Should the caller be wrong
// about the cursor (another connection of the key acked further, on
// another node, during a takeover), the cursor moves back, but nothing is
// lost and, in all but a rare case, nothing delivered again: every cursor
// move trims what it acknowledges, so the messages between were trimmed
// already and a replay from the older cursor reads what it would have read
// from the newer one (only a trim that failed after its SET leaves some,
// sent again: duplicates, which at-least-once allows).
func (o *Outbox) AckForward(ctx context.Context, merchantID, apiKey, id string) error {
	ms, seq, ok := parseID(id)
	if !ok {
		return ErrUnknownID
	}
	set := redis.NewStatusCmd(ctx, "set", o.keys.Ack(merchantID, apiKey), id)
	// MINID keeps ids >= its argument: trim to the id right after the ack.
	next := strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
	trim := redis.NewIntCmd(ctx, "xtrim", o.keys.Outbox(merchantID, apiKey), "minid", next)
	return o.batch.DoAll(ctx, set, trim)
}

// Trim drops messages older than retention, acknowledged or not.
func (o *Outbox) Trim(ctx context.Context, merchantID, apiKey string, retention time.Duration, now time.Time) error {
	minID := strconv.FormatInt(now.Add(-retention).UnixMilli(), 10) + "-0"
	return o.rdb.XTrimMinID(ctx, o.keys.Outbox(merchantID, apiKey), minID).Err()
}

// Depth returns how many messages of the API key are waiting for an ack.
func (o *Outbox) Depth(ctx context.Context, merchantID, apiKey string) (int64, error) {
	return o.rdb.XLen(ctx, o.keys.Outbox(merchantID, apiKey)).Result()
}

// DepthAll is Depth summed over several outboxes (merchant, API key), in
// one pipeline.
func (o *Outbox) DepthAll(ctx context.Context, outboxes [][2]string) (int64, error) {
	if len(outboxes) == 0 {
		return 0, nil
	}
	pipe := o.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(outboxes))
	for i, mk := range outboxes {
		lens[i] = pipe.XLen(ctx, o.keys.Outbox(mk[0], mk[1]))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	total := int64(0)
	for _, l := range lens {
		total += l.Val()
	}
	return total, nil
}

// CompareIDs orders two stream ids: -1, 0 or 1.
func CompareIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if an != bn {
		if an < bn {
			return -1
		}
		return 1
	}
	asn, _ := strconv.ParseUint(as, 10, 64)
	bsn, _ := strconv.ParseUint(bs, 10, 64)
	switch {
	case asn < bsn:
		return -1
	case asn > bsn:
		return 1
	}
	return 0
}
