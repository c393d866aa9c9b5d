package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Load reads a transaction.
func (s *Store) Load(ctx context.Context, merchantID, id string) (*Txn, error) {
	data, err := s.rdb.HGet(ctx, s.keys.Txn(merchantID, id), "data").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t := new(Txn)
	if err := json.Unmarshal(data, t); err != nil {
		return nil, fmt.Errorf("decode %s: %w", id, err)
	}
	if t.MerchantID != merchantID {
		return nil, ErrNotFound
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
		return nil, err
	}
	return cmd.Val(), nil
}

// Get reads a plain string key ("" when absent).
func (s *Store) get(ctx context.Context, key string) (string, error) {
	v, err := s.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// refAndCurrent reads a reference key (when withRef) and a current-
// transaction key in one round trip; "" for absent ones.
func (s *Store) refAndCurrent(ctx context.Context, refKey, curKey string, withRef bool) (string, string, error) {
	if !withRef {
		cur, err := s.get(ctx, curKey)
		return "", cur, err
	}
	vals, err := s.rdb.MGet(ctx, refKey, curKey).Result()
	if err != nil {
		return "", "", err
	}
	ref, _ := vals[0].(string)
	cur, _ := vals[1].(string)
	return ref, cur, nil
}

// commitScript applies a commit atomically: it checks every condition and,
// only if all hold, performs every write. Conditions: "rev" (a transaction
// hash's rev equals the value, "0" = absent) and "get" (a string key equals
// the value, "" = absent). Writes: hset, set, setpx, del, delifeq, zadd,
// zrem, xadd (returns the new stream ids in order).
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
local res = {1, 0}
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
    table.insert(res, redis.call("XADD", k, "*", "m", ARGV[i+2])); i = i + 3
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
	xadds []string  // outbox stream key of each xadd, in order
	bufs  []*[]byte // encode buffers of the ops, back to encodeBufs once exec returns
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

func (c *commit) hset(key string, rev int64, data []byte) {
	c.ops = append(c.ops, "hset", c.key(key), strconv.FormatInt(rev, 10), data)
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
func (c *commit) xadd(key string, data []byte) {
	c.ops = append(c.ops, "xadd", c.key(key), data)
	c.xadds = append(c.xadds, key)
}

// exec runs the commit; errConflict when a condition failed. It returns the
// ids of the xadd entries in order.
func (c *commit) exec(ctx context.Context, s *Store) ([]string, error) {
	args := redisx.ScriptArgs(commitScript, c.keys, 1+len(c.conds)+len(c.ops))
	args = append(args, c.ncond)
	args = append(args, c.conds...)
	args = append(args, c.ops...)
	res, err := redisx.RunScriptArgs(ctx, s.batch, s.rdb, commitScript, c.keys, args).Slice()
	c.release() // RunScript waits for the outcome even when ctx ends (redisx.Batcher.Do)
	if err != nil {
		return nil, err
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return nil, errConflict
	}
	ids := make([]string, 0, len(res)-2)
	for _, v := range res[2:] {
		s, _ := v.(string)
		ids = append(ids, s)
	}
	return ids, nil
}

// saveTxn writes t (with its rev bumped) guarded by its previous rev, and
// brings its deadline entries in line with prev's.
func (s *Store) saveTxn(c *commit, t *Txn, prev map[string]time.Time) error {
	prevRev := t.Rev
	t.Rev++
	buf := encodeBufs.Get().(*[]byte)
	data, err := t.appendJSON((*buf)[:0])
	if err != nil {
		encodeBufs.Put(buf)
		return err
	}
	*buf = data
	c.bufs = append(c.bufs, buf)
	k := s.keys.Txn(t.MerchantID, t.ID)
	c.requireRev(k, prevRev)
	c.hset(k, t.Rev, data)
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
	return nil
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
		return nil, err
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
