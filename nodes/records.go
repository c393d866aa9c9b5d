package nodes

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Device is a device's shared record: its status as every node sees it
// (online, reconnecting, offline), the node and connection that hold it,
// and its epoch, which grows with every change.
type Device struct {
	Status     string
	Node       string
	Conn       string
	Epoch      int64
	GraceUntil time.Time // while reconnecting
	LastSeen   time.Time
}

// Every script below touches one device's record and its merchant's grace
// set, or one API key's records: keys of one merchant (hash tag {m}), so
// one Redis Cluster slot.

// upScript makes conn on node the device's connection: online, its grace
// period over. It answers the record as it was and the new epoch.
var upScript = redis.NewScript(`
local old = redis.call('HMGET', KEYS[1], 'status', 'node', 'conn')
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'status', 'online', 'node', ARGV[2], 'conn', ARGV[3], 'grace', '0', 'seen', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
return {old[1] or '', old[2] or '', old[3] or '', epoch}
`)

// downScript starts the grace period of a device whose connection ended,
// if that connection still holds it (online, same node and connection):
// else a newer connection, or the release of this node as dead, came
// first, and nothing is done (0).
var downScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'status', 'node', 'conn')
if r[1] ~= 'online' or r[2] ~= ARGV[2] or r[3] ~= ARGV[3] then return 0 end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'status', 'reconnecting', 'grace', ARGV[4], 'seen', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return epoch
`)

// expireScript turns a device whose grace period is due offline. The
// grace set's member is the claim: of the nodes that find it due, the one
// that removes it acts (0 for the others, and for a device that came back).
var expireScript = redis.NewScript(`
local g = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not g or tonumber(g) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'status') ~= 'reconnecting' then return 0 end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'status', 'offline', 'grace', '0')
return epoch
`)

// demoteScript takes a device from a node that no longer holds it (dead,
// or this node's previous run): if the record still names that node, it
// becomes ARGV[3] (reconnecting with a grace period until ARGV[4], or
// offline). A record that names a live node, or changed since it was
// read (epoch ARGV[5]), is left alone (0).
var demoteScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if (r[1] or '') ~= ARGV[2] or tostring(r[2] or '0') ~= ARGV[5] then return 0 end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
if ARGV[3] == 'reconnecting' then
  redis.call('HSET', KEYS[1], 'status', 'reconnecting', 'grace', ARGV[4], 'node', '', 'conn', '')
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', 'offline', 'grace', '0', 'node', '', 'conn', '')
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return epoch
`)

func ms(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func fromMs(s string) time.Time {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// DeviceUp records conn on this node as the device's connection. It
// returns the record as it was before and the new epoch.
func (n *Node) DeviceUp(ctx context.Context, merchantID, device, conn string, now time.Time) (Device, int64, error) {
	ks := n.opts.Keys
	r, err := upScript.Run(ctx, n.rdb, []string{ks.Device(merchantID, device), ks.Grace(merchantID)}, device, n.opts.ID, conn, ms(now)).Slice()
	if err != nil {
		return Device{}, 0, err
	}
	old := Device{Status: str(r[0]), Node: str(r[1]), Conn: str(r[2])}
	epoch, _ := r[3].(int64)
	return old, epoch, nil
}

// DeviceDown starts the device's grace period if conn on this node still
// holds it; epoch 0: it does not (nothing changed).
func (n *Node) DeviceDown(ctx context.Context, merchantID, device, conn string, graceUntil, lastSeen time.Time) (int64, error) {
	ks := n.opts.Keys
	return downScript.Run(ctx, n.rdb, []string{ks.Device(merchantID, device), ks.Grace(merchantID)}, device, n.opts.ID, conn, ms(graceUntil), ms(lastSeen)).Int64()
}

// ExpireGrace turns the device offline if its grace period is due and no
// other node did; epoch 0: nothing to do here.
func (n *Node) ExpireGrace(ctx context.Context, merchantID, device string, now time.Time) (int64, error) {
	ks := n.opts.Keys
	return expireScript.Run(ctx, n.rdb, []string{ks.Device(merchantID, device), ks.Grace(merchantID)}, device, ms(now)).Int64()
}

// Demote takes the device from node (which no longer holds it), as read
// at epoch: reconnecting until graceUntil, or offline when graceUntil is
// zero. Epoch 0: the record changed meanwhile, nothing was done.
func (n *Node) Demote(ctx context.Context, merchantID, device, node string, epoch int64, graceUntil time.Time) (int64, error) {
	ks := n.opts.Keys
	status := "offline"
	if !graceUntil.IsZero() {
		status = "reconnecting"
	}
	return demoteScript.Run(ctx, n.rdb, []string{ks.Device(merchantID, device), ks.Grace(merchantID)},
		device, node, status, ms(graceUntil), strconv.FormatInt(epoch, 10)).Int64()
}

// DueGraces lists, for each merchant, its devices whose grace period is
// due, in one pipeline.
func (n *Node) DueGraces(ctx context.Context, merchants []string, now time.Time) (map[string][]string, error) {
	if len(merchants) == 0 {
		return nil, nil
	}
	pipe := n.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(merchants))
	for i, m := range merchants {
		cmds[i] = pipe.ZRangeByScore(ctx, n.opts.Keys.Grace(m), &redis.ZRangeBy{Min: "-inf", Max: ms(now)})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for i, c := range cmds {
		if v := c.Val(); len(v) > 0 {
			out[merchants[i]] = v
		}
	}
	return out, nil
}

// DeviceRef names a device of a merchant.
type DeviceRef struct{ Merchant, Device string }

// Devices reads the records of devices, in one pipeline (a zero Device
// for one that has none).
func (n *Node) Devices(ctx context.Context, refs []DeviceRef) ([]Device, error) {
	pipe := n.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(refs))
	for i, r := range refs {
		cmds[i] = pipe.HMGet(ctx, n.opts.Keys.Device(r.Merchant, r.Device), "status", "node", "conn", "epoch", "grace", "seen")
	}
	if len(refs) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	out := make([]Device, len(refs))
	for i, c := range cmds {
		v := c.Val()
		if len(v) < 6 {
			continue
		}
		out[i] = Device{Status: str(v[0]), Node: str(v[1]), Conn: str(v[2]), GraceUntil: fromMs(str(v[4])), LastSeen: fromMs(str(v[5]))}
		out[i].Epoch, _ = strconv.ParseInt(str(v[3]), 10, 64)
	}
	return out, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// ---- API keys ----

// claimKeyScript makes conn on node the API key's connection (conn ""
// for an HTTP event session, which displaces a WebSocket too) and, when
// it displaces one (or ARGV[5] says a session was replaced), counts the
// displacement in the key's window of ARGV[4] ms. It answers the holder
// as it was and the displacements in the window.
var claimKeyScript = redis.NewScript(`
local old = redis.call('HMGET', KEYS[1], 'node', 'conn')
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'conn', ARGV[2])
local n = 0
if (old[2] and old[2] ~= '') or ARGV[5] == '1' then
  local now = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[2], now, ARGV[1] .. ':' .. ARGV[2] .. ':' .. now)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  n = redis.call('ZCARD', KEYS[2])
end
return {old[1] or '', old[2] or '', n}
`)

// releaseKeyScript forgets the key's connection if conn on node still
// holds it (ARGV[2] "" releases whatever node ARGV[1] holds: it died).
var releaseKeyScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'node', 'conn')
if r[1] ~= ARGV[1] or (ARGV[2] ~= '' and r[2] ~= ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', '', 'conn', '')
return 1
`)

// ClaimKey records conn on this node as the API key's connection. It
// returns the node and connection that held it (both "" for none) and how
// many displacements of the key the window holds (0 when none happened
// now). replacedSession counts a displacement although no connection
// held the key (an HTTP event session was replaced).
func (n *Node) ClaimKey(ctx context.Context, merchantID, apiKey, conn string, now time.Time, window time.Duration, replacedSession bool) (node, oldConn string, flaps int, err error) {
	ks := n.opts.Keys
	flag := "0"
	if replacedSession {
		flag = "1"
	}
	r, err := claimKeyScript.Run(ctx, n.rdb, []string{ks.KeyOwner(merchantID, apiKey), ks.Flaps(merchantID, apiKey)},
		n.opts.ID, conn, ms(now), strconv.FormatInt(window.Milliseconds(), 10), flag).Slice()
	if err != nil {
		return "", "", 0, err
	}
	c, _ := r[2].(int64)
	return str(r[0]), str(r[1]), int(c), nil
}

// ReleaseKey forgets the key's connection if conn on node still holds it
// (conn "": whatever node holds). Queued with the bus's next batch.
func (n *Node) ReleaseKey(merchantID, apiKey, node, conn string) {
	key := n.opts.Keys.KeyOwner(merchantID, apiKey)
	n.Queue(func(p redis.Pipeliner) {
		// Eval, not Run: in a pipeline Run queues EVALSHA alone, which
		// fails with NOSCRIPT where the script was never loaded.
		releaseKeyScript.Eval(context.Background(), p, []string{key}, node, conn)
	})
}

// KeyRef names an API key of a merchant.
type KeyRef struct{ Merchant, Key string }

// KeyHolders reads which node holds each API key's connection ("" for
// none), in one pipeline.
func (n *Node) KeyHolders(ctx context.Context, refs []KeyRef) ([]string, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	pipe := n.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(refs))
	for i, r := range refs {
		cmds[i] = pipe.HGet(ctx, n.opts.Keys.KeyOwner(r.Merchant, r.Key), "node")
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	out := make([]string, len(refs))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// ---- connections (for ops) ----

// AddConn records one of this node's connections (its JSON), queued with
// the bus's next batch.
func (n *Node) AddConn(id string, info []byte) {
	key := n.opts.Keys.NodeConns(n.opts.ID)
	n.Queue(func(p redis.Pipeliner) { p.HSet(context.Background(), key, id, info) })
}

// RemoveConn forgets one of this node's connections.
func (n *Node) RemoveConn(id string) {
	key := n.opts.Keys.NodeConns(n.opts.ID)
	n.Queue(func(p redis.Pipeliner) { p.HDel(context.Background(), key, id) })
}

// Conns reads the connections a node recorded (JSON by connection id).
func (n *Node) Conns(ctx context.Context, node string) (map[string]string, error) {
	return n.rdb.HGetAll(ctx, n.opts.Keys.NodeConns(node)).Result()
}

// ---- deadlines ----

// claimTTL is how long a claimed deadline stays this node's: a node that
// dies before applying it leaves it to another's sweep after this.
const claimTTL = 30 * time.Second

// ClaimDeadline reports whether this node may apply a due deadline: it
// claimed it, or had claimed it before (a retry). Of several nodes whose
// timers or sweeps find it due, one may.
func (n *Node) ClaimDeadline(ctx context.Context, merchantID, member string, at time.Time) (bool, error) {
	key := n.opts.Keys.DeadlineClaim(merchantID, member, at.UnixMilli())
	ok, err := n.rdb.SetNX(ctx, key, n.opts.ID, claimTTL).Result()
	if err != nil || ok {
		return ok, err
	}
	holder, err := n.rdb.Get(ctx, key).Result()
	if err == redis.Nil {
		return false, nil
	}
	return holder == n.opts.ID, err
}
