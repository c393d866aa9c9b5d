package session

import (
	"context"
	"sync"
)

// txnCache keeps the last committed copy of transactions that still have
// work (open commands), so that the next event on them skips a Redis read
// and a JSON decode. It is only ever a guess: every commit is guarded by the
// transaction's rev, so a stale copy (another node changed it) fails the
// commit, is forgotten, and the retry reads Redis. Reads that answer
// clients (Get, List) never use it.
type txnCache struct {
	mu sync.Mutex
	m  map[cacheKey]*Txn // committed copies nobody changes; guarded by mu
}

// maxCached bounds the cache; past it, it starts again empty.
const maxCached = 50_000

// cacheKey names a transaction or a device in a cache: a struct, so that a
// lookup builds no string.
type cacheKey struct{ merchantID, id string }

func (c *txnCache) get(merchantID, id string) *Txn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.m[cacheKey{merchantID, id}]; t != nil {
		return t.Clone()
	}
	return nil
}

// put remembers t if it still has work, and forgets it otherwise. t
// becomes the cache's: the caller only reads it afterwards (get hands out
// copies, which are what gets changed), so that a commit does not copy
// the transaction it has just written.
func (c *txnCache) put(t *Txn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{t.MerchantID, t.ID}
	if !t.HasOpenCommands() {
		delete(c.m, k)
		return
	}
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[cacheKey]*Txn)
	}
	c.m[k] = t
}

func (c *txnCache) forget(merchantID, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, cacheKey{merchantID, id})
}

// loadForUpdate returns a private copy of the transaction, from the cache
// when it has one.
func (s *Store) loadForUpdate(ctx context.Context, merchantID, id string) (*Txn, error) {
	t, _, err := s.loadCached(ctx, merchantID, id)
	return t, err
}

// loadCached is loadForUpdate that also reports whether the copy came from
// the cache (and so may be behind Redis).
func (s *Store) loadCached(ctx context.Context, merchantID, id string) (*Txn, bool, error) {
	if t := s.cache.get(merchantID, id); t != nil {
		return t, true, nil
	}
	t, err := s.loadFresh(ctx, merchantID, id)
	return t, false, err
}

// loadFresh reads the transaction from Redis and caches a copy of it.
func (s *Store) loadFresh(ctx context.Context, merchantID, id string) (*Txn, error) {
	t, err := s.Load(ctx, merchantID, id)
	if err == nil {
		s.cache.put(t.Clone()) // t itself is the caller's to change
	}
	return t, err
}

// Clone returns a copy of t that can be changed without changing t: its
// pointers point to copies, and its history shares t's entries, which are
// never changed in place (sharedHistory). A committed Txn is never changed
// again, only cloned: the ops feeds read it from their own goroutines
// (Options.Observe) while the engine goes on.
func (t *Txn) Clone() *Txn {
	c := *t
	c.History = sharedHistory(t.History)
	if t.CompletedAt != nil {
		v := *t.CompletedAt
		c.CompletedAt = &v
	}
	if t.Receipts != nil {
		v := *t.Receipts
		c.Receipts = &v
	}
	if t.FirstSentAt != nil {
		v := *t.FirstSentAt
		c.FirstSentAt = &v
	}
	if t.OpenSignature != nil {
		v := *t.OpenSignature
		c.OpenSignature = &v
	}
	if t.Result != nil {
		r := *t.Result
		if r.Receipts != nil {
			v := *r.Receipts
			r.Receipts = &v
		}
		if r.AmountMinor != nil {
			v := *r.AmountMinor
			r.AmountMinor = &v
		}
		c.Result = &r
	}
	return &c
}

// currentCache remembers, per terminal, the transaction this node last saw
// committed as the terminal's current one ("" for none), so that a new sale
// can skip reading it: the create's commit is guarded by the value it
// assumed, so a wrong guess costs one retry with a real read, never a wrong
// decision.
type currentCache struct {
	mu sync.Mutex
	m  map[cacheKey]string // by merchant and device: transaction id or ""; guarded by mu
}

// get returns the remembered current transaction and whether there is one.
func (c *currentCache) get(merchantID, deviceID string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.m[cacheKey{merchantID, deviceID}]
	return id, ok
}

// set remembers id as the device's current transaction.
func (c *currentCache) set(merchantID, deviceID, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[cacheKey]string)
	}
	c.m[cacheKey{merchantID, deviceID}] = id
}

// cleared records that id stopped being the device's current transaction
// (the commit deleted the key only if it still held id).
func (c *currentCache) cleared(merchantID, deviceID, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{merchantID, deviceID}
	if cur, ok := c.m[k]; ok && cur == id {
		c.m[k] = ""
	}
}

// forget drops what is remembered of the device.
func (c *currentCache) forget(merchantID, deviceID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, cacheKey{merchantID, deviceID})
}

// curChange is a staged change of a terminal's current-transaction key.
type curChange struct {
	merchantID, deviceID, id string
	clear                    bool // delete-if-equal; otherwise set
}

// clear forgets every transaction.
func (c *txnCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

// clear forgets every terminal.
func (c *currentCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}
