// Package keys is the one place that names termhub's Redis keys. Every key
// of a merchant carries the merchant id as a hash tag ({m}), so a commit that
// touches several of them stays in one Redis Cluster slot.
package keys

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
