package webhook

import "github.com/redis/go-redis/v9"

// The keys of every script share the merchant's hash tag, so each runs in
// one Redis Cluster slot.

// scheduleScript puts a read entry on the schedule unless it is there
// already or no longer in the stream.
// KEYS: retry, state, stream. ARGV: entry id, due (ms), state JSON.
var scheduleScript = redis.NewScript(`
if redis.call("ZSCORE", KEYS[1], ARGV[1]) then return 0 end
if #redis.call("XRANGE", KEYS[3], ARGV[1], ARGV[1]) == 0 then return 0 end
redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
redis.call("HSETNX", KEYS[2], ARGV[1], ARGV[3])
return 1
`)

// takeScript leases a due entry to the caller: its score moves to the end
// of the lease, so no one else attempts it meanwhile, and if the caller dies
// it is due again then.
// KEYS: retry. ARGV: entry id, now (ms), lease end (ms).
var takeScript = redis.NewScript(`
local s = redis.call("ZSCORE", KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call("ZADD", KEYS[1], ARGV[3], ARGV[1])
return 1
`)

// rescheduleScript stores a failed attempt and its retry time, unless the
// entry was finished meanwhile.
// KEYS: retry, state. ARGV: entry id, next attempt (ms), state JSON.
var rescheduleScript = redis.NewScript(`
if not redis.call("ZSCORE", KEYS[1], ARGV[1]) then return 0 end
redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
redis.call("HSET", KEYS[2], ARGV[1], ARGV[3])
return 1
`)

// finishScript acknowledges and deletes a delivered or given-up entry,
// drops its schedule and state, and counts the outcome if this call was the
// one that removed it (returns 1 then).
// KEYS: stream, retry, state, stats. ARGV: group, entry id, counter field
// ("" for none), last-time field, now (ms).
var finishScript = redis.NewScript(`
redis.call("XACK", KEYS[1], ARGV[1], ARGV[2])
redis.call("XDEL", KEYS[1], ARGV[2])
redis.call("HDEL", KEYS[3], ARGV[2])
if redis.call("ZREM", KEYS[2], ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= "" then
  redis.call("HINCRBY", KEYS[4], ARGV[3], 1)
  redis.call("HSET", KEYS[4], ARGV[4], ARGV[5])
end
return 1
`)
