// Package keys is the one place that names termhub's Redis keys. Every key
// of a merchant carries the merchant id as a hash tag ({m}), so a commit that
// touches several of them stays in one Redis Cluster slot.
package keys

import "strconv"

// Space names keys under a prefix (config key_prefix; tests use a random one).
type Space struct{ Prefix string }

func (s Space) tag(kind, m string) string { return s.Prefix + kind + ":{" + m + "}" }

// Txn is a transaction hash {rev, data}.
func (s Space) Txn(m, id string) string { return s.tag("txn", m) + ":" + id }

// Ref maps a merchant reference to its transaction id.
func (s Space) Ref(m, ref string) string { return s.tag("ref", m) + ":" + ref }

// Idem holds an idempotency record for 24 h.
func (s Space) Idem(m, key string) string { return s.tag("idem", m) + ":" + key }

// Current points at the transaction occupying a terminal.
func (s Space) Current(m, device string) string { return s.tag("cur", m) + ":" + device }

// Txns is the merchant's transactions by creation time (for listing).
func (s Space) Txns(m string) string { return s.tag("txns", m) }

// Deadlines is the merchant's due times, members "<txnID>|<kind>".
func (s Space) Deadlines(m string) string { return s.tag("deadlines", m) }

// Outbox is an API key's durable POS message stream.
func (s Space) Outbox(m, apiKey string) string { return s.tag("outbox", m) + ":" + apiKey }

// Ack is an API key's cumulative ack cursor (a stream id).
func (s Space) Ack(m, apiKey string) string { return s.tag("ack", m) + ":" + apiKey }

// Session is an HTTP event session of an API key.
func (s Space) Session(m, apiKey string) string { return s.tag("session", m) + ":" + apiKey }

// Webhooks is the merchant's webhook delivery stream.
func (s Space) Webhooks(m string) string { return s.tag("webhooks", m) }

// Open is the set of a device's transactions with commands still open for
// it (re-sent when it reconnects).
func (s Space) Open(m, device string) string { return s.tag("open", m) + ":" + device }

// WebhookRetry is the merchant's webhook delivery schedule: a sorted set of
// the stream entry ids (of Webhooks) not yet delivered, scored by the time
// (Unix ms) of their next attempt.
func (s Space) WebhookRetry(m string) string { return s.tag("webhook-retry", m) }

// WebhookState is the merchant's webhook delivery state: a hash from stream
// entry id to the JSON of its attempts so far (for retries and ops).
func (s Space) WebhookState(m string) string { return s.tag("webhook-state", m) }

// WebhookStats counts the merchant's webhook outcomes by hour (a hash of
// "ok:<unix hour>" and "gave_up:<unix hour>" counters and "last_ok").
func (s Space) WebhookStats(m string) string { return s.tag("webhook-stats", m) }

// OutboxSeq counts the entries ever appended to an API key's outbox: the
// commit that appends one increments it in the same script, so a live
// connection can tell whether a commit's messages follow the last one it
// sent or whether something came in between (hub delivery).
func (s Space) OutboxSeq(m, apiKey string) string { return s.tag("outbox-seq", m) + ":" + apiKey }

// TerminalEvents is a device's recent status changes, newest first: a list
// of JSON entries (ops.StatusEvent) capped by the writer, so that the
// dashboard can show when a terminal went online, reconnecting or offline.
func (s Space) TerminalEvents(m, device string) string { return s.tag("term-events", m) + ":" + device }

// OpsSession is an ops dashboard session: a string (JSON of when and from
// where it was opened) whose TTL is the session's idle expiry. digest is
// a keyed hash of the session id (package ops), never the id itself, so a
// copy of Redis yields no live cookie.
func (s Space) OpsSession(digest string) string { return s.Prefix + "ops-session:" + digest }

// Replay remembers an accepted signed POST of an API key (its signature,
// lower-case hex) until its timestamp has expired, so a repeat is refused.
func (s Space) Replay(m, apiKey, sig string) string {
	return s.tag("replay", m) + ":" + apiKey + ":" + sig
}

// Marker holds a random token that every hub on this Redis reads: when it
// is gone or different, the Redis came back without its data.
func (s Space) Marker() string { return s.Prefix + "redis-marker" }

// ---- several nodes on one Redis (package nodes) ----

// Nodes is the node registry: a hash from node id to the JSON of the
// node's last heartbeat.
func (s Space) Nodes() string { return s.Prefix + "nodes" }

// NodeConns holds a node's live connections: a hash from connection id to
// its JSON, for a node that starts to list the others' (the rest comes on
// the bus). The node id is its hash tag.
func (s Space) NodeConns(node string) string { return s.Prefix + "node-conns:{" + node + "}" }

// Device is a device's shared connection record: a hash of its status,
// the node and connection that hold it, the epoch (grows with every
// change: fencing and ordering), the end of its grace period and when it
// was last seen.
func (s Space) Device(m, device string) string { return s.tag("dev", m) + ":" + device }

// Grace is the merchant's running terminal grace periods: a sorted set of
// device ids scored by when (Unix ms) each goes offline. A member is
// claimed (removed) by exactly one node when it falls due.
func (s Space) Grace(m string) string { return s.tag("grace", m) }

// KeyOwner records which node and connection hold an API key's live POS
// connection (a hash: node, conn, epoch).
func (s Space) KeyOwner(m, apiKey string) string { return s.tag("owner", m) + ":" + apiKey }

// Flaps are an API key's recent displacements across every node (a sorted
// set scored by Unix ms), for the fighting-keys rule.
func (s Space) Flaps(m, apiKey string) string { return s.tag("flaps", m) + ":" + apiKey }

// DeadlineClaim is held by the node that applies a due deadline, so that
// of several nodes' sweepers exactly one does.
func (s Space) DeadlineClaim(m, member string, atMs int64) string {
	return s.tag("claim", m) + ":" + member + ":" + strconv.FormatInt(atMs, 10)
}

// BusChannel is the PUB/SUB channel every node listens on (status and
// connection changes, kicks, wake-ups of long polls).
func (s Space) BusChannel() string { return s.Prefix + "bus" }

// NodeChannel is a node's own PUB/SUB channel (nudges, terminal commands,
// displacements meant for its connections). Its hash tag is the node id,
// so on a Redis Cluster it is a sharded channel of one shard.
func (s Space) NodeChannel(node string) string { return s.Prefix + "node:{" + node + "}" }
