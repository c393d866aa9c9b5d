package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/redisx"
)

// ErrNotFound is returned for a transaction that does not exist (or belongs
// to another merchant: the two are never told apart).
var ErrNotFound = errors.New("transaction not found")

// errConflict means another writer changed something the commit depended
// on; the caller reloads and tries again.
var errConflict = errors.New("concurrent update")

// ErrUnavailable means Redis did not serve a request: nothing it asked for
// was changed (or, as ErrOutcomeUnknown, it may have been and the engine is
// finding out). The client may retry: by reference or Idempotency-Key a
// retry converges on the one transaction (docs/ops.md#when-redis-stalls-restarts-or-fails-over).
var ErrUnavailable = errors.New("the store is unavailable; retry shortly")

// ErrOutcomeUnknown is the error of a commit that was sent but whose answer
// never came (a stalled or restarting Redis): it may or may not have been
// applied. The engine finds out and, if it was, carries out everything it
// caused (resolver.go). It is an ErrUnavailable to the client.
var ErrOutcomeUnknown = fmt.Errorf("%w (the outcome is being checked)", ErrUnavailable)

// storeErr turns a Redis error into ErrUnavailable when it is one: an
// outage, as opposed to an answer such as redis.Nil.
func storeErr(err error) error {
	if err != nil && redisx.Outage(err) && !errors.Is(err, ErrUnavailable) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// Store keeps transactions in Redis.
type Store struct {
	rdb   redis.UniversalClient
	batch *redisx.Batcher // commits of concurrent requests share pipelines
	keys  keys.Space
	cache txnCache
	cur   currentCache
}

// NewStore returns a Store on rdb with keys under ks.
func NewStore(rdb redis.UniversalClient, ks keys.Space) *Store {
	return &Store{rdb: rdb, batch: redisx.NewBatcher(rdb, 0), keys: ks}
}

// Keys returns the key space.
func (s *Store) Keys() keys.Space { return s.keys }

// Load reads a transaction. Its rev is the hash's: the data's own copy of
// it is behind once a resolver has fenced a commit (resolver.go), and a
// hash with a rev and no data is the tombstone of a create that never
// happened.
func (s *Store) Load(ctx context.Context, merchantID, id string) (*Txn, error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.Txn(merchantID, id), "rev", "data").Result()
	if err != nil {
		return nil, storeErr(err)
	}
	data, _ := vals[1].(string)
	if data == "" {
		return nil, ErrNotFound
	}
	t := new(Txn)
	if err := json.Unmarshal([]byte(data), t); err != nil {
		return nil, fmt.Errorf("decode %s: %w", id, err)
	}
	if t.MerchantID != merchantID {
		return nil, ErrNotFound
	}
	if rev, _ := vals[0].(string); rev != "" {
		if t.Rev, err = strconv.ParseInt(rev, 10, 64); err != nil {
			return nil, fmt.Errorf("decode %s: rev %q", id, rev)
		}
	}
	return t, nil
}

// openIDs lists the transactions with open commands on a device. It goes
// through the commit batcher: in a reconnect storm every connect and every
// drop reads one such set, and thousands of them at once share pipelines
// instead of costing a write and a read on a socket each.
func (s *Store) openIDs(ctx context.Context, merchantID, deviceID string) ([]string, error) {
	cmd := redis.NewStringSliceCmd(ctx, "smembers", s.keys.Open(merchantID, deviceID))
	if err := s.batch.Do(ctx, cmd); err != nil {
		return nil, storeErr(err)
	}
	return cmd.Val(), nil
}

// get reads a plain string key ("" when absent).
func (s *Store) get(ctx context.Context, key string) (string, error) {
	v, err := s.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, storeErr(err)
}

// refAndCurrent reads the transaction that uses a reference (when it is not
// "") and a device's current transaction in one round trip (both keys carry
// the merchant's hash tag); "" for absent ones.
func (s *Store) refAndCurrent(ctx context.Context, merchantID, reference, deviceID string) (string, string, error) {
	curKey := s.keys.Current(merchantID, deviceID)
	if reference == "" {
		cur, err := s.get(ctx, curKey)
		return "", cur, err
	}
	vals, err := s.rdb.MGet(ctx, s.keys.Ref(merchantID, reference), curKey).Result()
	if err != nil {
		return "", "", storeErr(err)
	}
	ref, _ := vals[0].(string)
	cur, _ := vals[1].(string)
	return ref, cur, nil
}

// refID reads the id of the transaction that uses a reference ("" for
// none).
func (s *Store) refID(ctx context.Context, merchantID, reference string) (string, error) {
	return s.get(ctx, s.keys.Ref(merchantID, reference))
}

// currents adds to out the current transaction of each device that has
// one.
func (s *Store) currents(ctx context.Context, merchantID string, devices []string, out map[string]string) error {
	ks := make([]string, len(devices))
	for i, d := range devices {
		ks[i] = s.keys.Current(merchantID, d)
	}
	vals, err := s.rdb.MGet(ctx, ks...).Result()
	if err != nil {
		return storeErr(err)
	}
	for i, v := range vals {
		if id, ok := v.(string); ok {
			out[devices[i]] = id
		}
	}
	return nil
}

// openCounts counts the transactions with open commands of each device,
// index-aligned, in one pipeline.
func (s *Store) openCounts(ctx context.Context, merchantID string, devices []string) ([]int64, error) {
	out := make([]int64, len(devices))
	if len(devices) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(devices))
	for i, d := range devices {
		cards[i] = pipe.SCard(ctx, s.keys.Open(merchantID, d))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, storeErr(err)
	}
	for i, c := range cards {
		out[i] = c.Val()
	}
	return out, nil
}

// dropOpen removes a transaction that no longer exists from a device's
// open set. Best effort: a failure leaves an id that is skipped again.
func (s *Store) dropOpen(ctx context.Context, merchantID, deviceID, id string) {
	s.rdb.SRem(ctx, s.keys.Open(merchantID, deviceID), id)
}

// txnRank is the position of transaction id in the merchant's index,
// newest first; found is false when it is not there.
func (s *Store) txnRank(ctx context.Context, merchantID, id string) (rank int64, found bool, err error) {
	rank, err = s.rdb.ZRevRank(ctx, s.keys.Txns(merchantID), id).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, storeErr(err)
	}
	return rank, true, nil
}

// txnRange lists up to n ids of the merchant's index from position start,
// newest first.
func (s *Store) txnRange(ctx context.Context, merchantID string, start, n int64) ([]string, error) {
	ids, err := s.rdb.ZRevRange(ctx, s.keys.Txns(merchantID), start, start+n-1).Result()
	return ids, storeErr(err)
}

// idem reads an Idempotency-Key's record ("" when absent).
func (s *Store) idem(ctx context.Context, merchantID, key string) (string, error) {
	return s.get(ctx, s.keys.Idem(merchantID, key))
}

// setIdemIfAbsent records an Idempotency-Key's first response outside a
// commit (SET NX). Best effort: without the record a repeat is answered
// from the transaction again.
func (s *Store) setIdemIfAbsent(ctx context.Context, merchantID, key string, data []byte) {
	s.rdb.SetNX(ctx, s.keys.Idem(merchantID, key), data, IdempotencyTTL)
}

// commitScript applies a commit atomically: it checks every condition and,
// only if all hold, performs every write. Conditions: "rev" (a transaction
// hash's rev equals the value, "0" = absent) and "get" (a string key equals
// the value, "" = absent). Writes: hset, set, setpx, del, delifeq, zadd,
// zrem, xadd (an outbox entry: counts it in the outbox's counter and returns
// the new stream id and its number, in order), append (a stream entry
// that returns nothing: a webhook event). The first xadd to an outbox
// carries how many entries the commit adds to it, and the counter is
// raised once by that many: each redis.call is a share of the script's
// time on Redis's one thread (docs/performance.md), and a terminal's run
// often sends its POS two messages.
//
// xaddw and appendw are xadd and append of an entry that embeds a
// transaction the same commit saves (hset): the entry comes as the bytes
// before and after the transaction, and the script splices in the first n
// bytes of that hset's data (the transaction's own fields: the stored copy
// only adds the hub's after them), found by its place among the write
// arguments. Each transaction then crosses to Redis once per commit rather
// than once more for every message and webhook event that carries it.
var commitScript = redis.NewScript(`
local i = 2
local n = tonumber(ARGV[1])
for c = 1, n do
  local kind, k, v = ARGV[i], KEYS[tonumber(ARGV[i+1])], ARGV[i+2]
  i = i + 3
  local cur
  if kind == "rev" then
    cur = redis.call("HGET", k, "rev")
    if not cur then cur = "0" end
  else
    cur = redis.call("GET", k)
    if not cur then cur = "" end
  end
  if cur ~= v then return {0, c} end
end
local ops = i
local function spliced(j)
  return ARGV[j] .. string.sub(ARGV[ops + tonumber(ARGV[j+2])], 1, tonumber(ARGV[j+3])) .. ARGV[j+1]
end
local res = {1, 0}
local seqs = {}
local function nextSeq(j)
  local sk, n = ARGV[j], tonumber(ARGV[j+1])
  if n > 0 then seqs[sk] = redis.call("INCRBY", KEYS[tonumber(sk)], n) - n end
  seqs[sk] = seqs[sk] + 1
  return seqs[sk]
end
while i <= #ARGV do
  local op = ARGV[i]
  local k = KEYS[tonumber(ARGV[i+1])]
  if op == "hset" then
    redis.call("HSET", k, "rev", ARGV[i+2], "data", ARGV[i+3]); i = i + 4
  elseif op == "set" then
    redis.call("SET", k, ARGV[i+2]); i = i + 3
  elseif op == "setpx" then
    redis.call("SET", k, ARGV[i+2], "PX", ARGV[i+3]); i = i + 4
  elseif op == "del" then
    redis.call("DEL", k); i = i + 2
  elseif op == "delifeq" then
    if redis.call("GET", k) == ARGV[i+2] then redis.call("DEL", k) end
    i = i + 3
  elseif op == "zadd" then
    redis.call("ZADD", k, ARGV[i+2], ARGV[i+3]); i = i + 4
  elseif op == "sadd" then
    redis.call("SADD", k, ARGV[i+2]); i = i + 3
  elseif op == "srem" then
    redis.call("SREM", k, ARGV[i+2]); i = i + 3
  elseif op == "zrem" then
    redis.call("ZREM", k, ARGV[i+2]); i = i + 3
  elseif op == "xadd" then
    local seq = nextSeq(i+2)
    table.insert(res, redis.call("XADD", k, "*", "m", ARGV[i+4]))
    table.insert(res, seq); i = i + 5
  elseif op == "xaddw" then
    local seq = nextSeq(i+2)
    table.insert(res, redis.call("XADD", k, "*", "m", spliced(i+4)))
    table.insert(res, seq); i = i + 8
  elseif op == "append" then
    redis.call("XADD", k, "*", "m", ARGV[i+2]); i = i + 3
  elseif op == "appendw" then
    redis.call("XADD", k, "*", "m", spliced(i+2)); i = i + 6
  else
    return redis.error_reply("commit: unknown op " .. op)
  end
end
return res
`)

// commit collects the conditions and writes of one atomic change.
type commit struct {
	keys  []string
	conds []any
	ncond int
	ops   []any
	xadds []string // outbox stream key of each xadd (not append), in order
	// seqCounts are the outbox counters the commit raises, each with
	// where the count of its entries is among ops (in its first xadd). A
	// commit raises one or two: a scan beats a map.
	seqCounts []seqCount
	bufs      []*[]byte // encode buffers of the ops, back to encodeBufs once exec returns
}

// encodeBufs recycles the buffers transactions are encoded into for a
// commit: every commit writes at least one, and once the script has run
// (go-redis has written its arguments and returned) nothing refers to them.
var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledBuf is the largest encode buffer kept for reuse, so that one
// transaction with a long history does not pin a big buffer in the pool.
const maxPooledBuf = 16 << 10

// release returns the commit's encode buffers to the pool.
func (c *commit) release() {
	for _, b := range c.bufs {
		if cap(*b) <= maxPooledBuf {
			*b = (*b)[:0]
			encodeBufs.Put(b)
		}
	}
	c.bufs = nil
}

// newCommit returns an empty commit, sized for a payment's (a few keys, a
// score of ops) so that staging one does not grow its slices step by step.
func newCommit() *commit {
	return &commit{keys: make([]string, 0, 8), conds: make([]any, 0, 6), ops: make([]any, 0, 32)}
}

// key returns k's number among the commit's keys (KEYS[n] in the script),
// adding it if it is new. A commit has a handful of keys: a scan beats a map.
func (c *commit) key(k string) int {
	for i, have := range c.keys {
		if have == k {
			return i + 1
		}
	}
	c.keys = append(c.keys, k)
	return len(c.keys)
}

func (c *commit) requireRev(key string, rev int64) {
	c.conds = append(c.conds, "rev", c.key(key), strconv.FormatInt(rev, 10))
	c.ncond++
}

func (c *commit) requireValue(key, value string) {
	c.conds = append(c.conds, "get", c.key(key), value)
	c.ncond++
}

// hset saves a transaction's stored copy, data, at rev. It returns where
// the data is among the write arguments, for entries that embed the
// transaction (savedTxn).
func (c *commit) hset(key string, rev int64, data []byte) int {
	c.ops = append(c.ops, "hset", c.key(key), strconv.FormatInt(rev, 10), data)
	return len(c.ops) - 1
}

// savedTxn is a transaction a commit saves: where its stored copy is among
// the write arguments (ref) and the copy's first bytes that are the
// transaction's wire JSON without its closing brace (wire).
type savedTxn struct {
	ref  int
	wire []byte
}

// split finds t's wire JSON in an entry: the bytes before and after it,
// or ok false when the entry does not carry this very transaction (an
// event of an earlier step of a run, or none).
func (t savedTxn) split(data []byte) (before, after []byte, ok bool) {
	if len(t.wire) == 0 {
		return nil, nil, false
	}
	i := bytes.Index(data, t.wire)
	if i < 0 || i+len(t.wire) >= len(data) || data[i+len(t.wire)] != '}' {
		return nil, nil, false
	}
	return data[:i], data[i+len(t.wire):], true
}
func (c *commit) set(key, v string) { c.ops = append(c.ops, "set", c.key(key), v) }
func (c *commit) setPX(key string, v []byte, ttl time.Duration) {
	c.ops = append(c.ops, "setpx", c.key(key), v, ttl.Milliseconds())
}
func (c *commit) del(key string)          { c.ops = append(c.ops, "del", c.key(key)) }
func (c *commit) delIfEq(key, v string)   { c.ops = append(c.ops, "delifeq", c.key(key), v) }
func (c *commit) sadd(key, member string) { c.ops = append(c.ops, "sadd", c.key(key), member) }
func (c *commit) srem(key, member string) { c.ops = append(c.ops, "srem", c.key(key), member) }
func (c *commit) zrem(key, member string) { c.ops = append(c.ops, "zrem", c.key(key), member) }
func (c *commit) zadd(key string, score int64, member string) {
	c.ops = append(c.ops, "zadd", c.key(key), score, member)
}

// xadd appends an outbox entry to stream key, counting it in seqKey; an
// entry that carries t goes without t's bytes, which the script splices
// in from t's save.
func (c *commit) xadd(key, seqKey string, data []byte, t savedTxn) {
	// The first entry to seqKey's outbox carries the count of all of them
	// (raised here by the later ones); the others carry 0.
	count := 1
	for _, sc := range c.seqCounts {
		if sc.key == seqKey {
			c.ops[sc.at] = c.ops[sc.at].(int) + 1
			count = 0
		}
	}
	if count == 1 {
		c.seqCounts = append(c.seqCounts, seqCount{key: seqKey, at: len(c.ops) + 3}) // after op, key and seqKey
	}
	if before, after, ok := t.split(data); ok {
		c.ops = append(c.ops, "xaddw", c.key(key), c.key(seqKey), count, before, after, t.ref, len(t.wire))
	} else {
		c.ops = append(c.ops, "xadd", c.key(key), c.key(seqKey), count, data)
	}
	c.xadds = append(c.xadds, key)
}

// seqCount is an outbox counter a commit raises: its key, and where the
// count is among the commit's ops.
type seqCount struct {
	key string
	at  int
}

// appendEntry adds an entry to stream key (a webhook event), whose id
// nobody needs; t as for xadd.
func (c *commit) appendEntry(key string, data []byte, t savedTxn) {
	if before, after, ok := t.split(data); ok {
		c.ops = append(c.ops, "appendw", c.key(key), before, after, t.ref, len(t.wire))
		return
	}
	c.ops = append(c.ops, "append", c.key(key), data)
}

// appended is an outbox entry a commit wrote: its stream id and its
// number in the outbox's count.
type appended struct {
	id  string
	seq int64
}

// exec runs the commit and returns the entries of its xadds in order. Its
// errors: errConflict when a condition failed (nothing written);
// ErrUnavailable when the commit was not sent or Redis refused it (nothing
// written); ErrOutcomeUnknown when it was sent and no answer came (it may
// have been written).
func (c *commit) exec(ctx context.Context, s *Store) ([]appended, error) {
	args := redisx.ScriptArgs(commitScript, c.keys, 1+len(c.conds)+len(c.ops))
	args = append(args, c.ncond)
	args = append(args, c.conds...)
	args = append(args, c.ops...)
	res, err := redisx.RunScriptArgs(ctx, s.batch, s.rdb, commitScript, c.keys, args).Slice()
	if !errors.Is(err, redisx.ErrNoAnswer) { // else the pipeline may still read the arguments
		c.release()
	}
	if err != nil {
		if errors.Is(err, redisx.ErrUnavailable) || redisx.Refused(err) {
			// Never sent, or refused by Redis before the script ran.
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		// No answer, or an error from within the script, which may have
		// written part of the commit: found out like a lost answer (the
		// rev is the first thing it writes).
		return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return nil, errConflict
	}
	out := make([]appended, 0, (len(res)-2)/2)
	for i := 2; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		seq, _ := res[i+1].(int64)
		out = append(out, appended{id: id, seq: seq})
	}
	return out, nil
}

// nextRev is the rev a commit gives a transaction saved at rev: the count
// of its commits in the high 32 bits, and a random stamp in the low ones,
// so that every commit's rev is its own. A commit whose answer was lost is
// then known to have been applied if and only if the rev it wrote is there
// (resolver.go), even when a competing commit from the same rev won.
func nextRev(rev int64) int64 {
	for {
		next := (rev>>32+1)<<32 | int64(rand.Uint32())
		if next != rev && next&0xffffffff != 0 {
			return next
		}
	}
}

// Commits is the number of commits a transaction stored with rev has had.
func Commits(rev int64) int64 { return rev >> 32 }

// saveTxn writes t (with a new rev) guarded by its previous rev, and
// brings its deadline entries in line with prev's.
func (s *Store) saveTxn(c *commit, t *Txn, prev map[string]time.Time) (savedTxn, error) {
	prevRev := t.Rev
	t.Rev = nextRev(prevRev)
	buf := encodeBufs.Get().(*[]byte)
	data, wireEnd, err := t.appendJSONWire((*buf)[:0])
	if err != nil {
		encodeBufs.Put(buf)
		return savedTxn{}, err
	}
	*buf = data
	c.bufs = append(c.bufs, buf)
	k := s.keys.Txn(t.MerchantID, t.ID)
	c.requireRev(k, prevRev)
	saved := savedTxn{ref: c.hset(k, t.Rev, data), wire: data[:wireEnd]}
	dk := s.keys.Deadlines(t.MerchantID)
	now := t.Deadlines()
	for kind, at := range now {
		if !prev[kind].Equal(at) {
			c.zadd(dk, at.UnixMilli(), t.ID+"|"+kind)
		}
	}
	for kind := range prev {
		if _, ok := now[kind]; !ok {
			c.zrem(dk, t.ID+"|"+kind)
		}
	}
	return saved, nil
}

// DueDeadline is one deadline entry.
type DueDeadline struct {
	MerchantID string
	TxnID      string
	Kind       string
	At         time.Time
}

// Deadlines lists a merchant's deadlines up to until (all when zero).
func (s *Store) Deadlines(ctx context.Context, merchantID string, until time.Time) ([]DueDeadline, error) {
	max := "+inf"
	if !until.IsZero() {
		max = strconv.FormatInt(until.UnixMilli(), 10)
	}
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, s.keys.Deadlines(merchantID), &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
	if err != nil {
		return nil, storeErr(err)
	}
	out := make([]DueDeadline, 0, len(zs))
	for _, z := range zs {
		member, _ := z.Member.(string)
		id, kind, ok := cutLast(member, '|')
		if !ok {
			continue
		}
		out = append(out, DueDeadline{MerchantID: merchantID, TxnID: id, Kind: kind, At: time.UnixMilli(int64(z.Score)).UTC()})
	}
	return out, nil
}

func cutLast(s string, sep byte) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// resolveScript settles a commit whose answer was lost, by its first
// transaction's rev. ARGV: the rev the commit expected, the rev it wrote,
// a fence rev, and how long a tombstone lives (ms). It returns {code, rev
// found}: 1, applied (the rev is the commit's); 0, not applied and now
// never to be: the rev was still the expected one and the fence replaces
// it, so the commit's condition can no longer hold (a transaction that did
// not exist gets a tombstone, a hash with only a rev, which expires long
// after any command could still be on its way); 2, the rev is someone
// else's (a later commit, or another fence).
var resolveScript = redis.NewScript(`
local cur = redis.call("HGET", KEYS[1], "rev") or "0"
if cur == ARGV[2] then return {1, cur} end
if cur ~= ARGV[1] then return {2, cur} end
redis.call("HSET", KEYS[1], "rev", ARGV[3])
if cur == "0" then redis.call("PEXPIRE", KEYS[1], ARGV[4]) end
return {0, cur}
`)

// tombstoneTTL is how long the fence of a create that never happened stays.
const tombstoneTTL = 24 * time.Hour

// outcome is what resolve found about a commit whose answer was lost.
type outcome int

const (
	outcomeApplied    outcome = iota // the commit was applied
	outcomeNotApplied                // it was not, and is fenced off for good
	outcomeMoved                     // another commit (or fence) came after: the rev tells no more
)

// resolve settles a lost commit by the rev of transaction id: prev is the
// rev it expected, next the rev it wrote, fence the rev to write if it has
// not been applied yet. It returns the rev found when the outcome is
// outcomeMoved.
func (s *Store) resolve(ctx context.Context, merchantID, id string, prev, next, fence int64) (outcome, int64, error) {
	res, err := resolveScript.Run(ctx, s.rdb, []string{s.keys.Txn(merchantID, id)},
		prev, next, fence, tombstoneTTL.Milliseconds()).Slice()
	if err != nil {
		return 0, 0, storeErr(err)
	}
	code, _ := res[0].(int64)
	var found int64
	switch v := res[1].(type) {
	case string:
		found, _ = strconv.ParseInt(v, 10, 64)
	case int64:
		found = v
	}
	switch code {
	case 1:
		return outcomeApplied, found, nil
	case 0:
		return outcomeNotApplied, found, nil
	}
	return outcomeMoved, found, nil
}
