package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/termhub/termhub/protocol"
)

// IdempotencyTTL is how long an Idempotency-Key replays its first response.
const IdempotencyTTL = 24 * time.Hour

// idemRecord is the first response to a request with an Idempotency-Key.
// Only successes are recorded: a refused request may be retried with the
// same key once the cause is fixed.
type idemRecord struct {
	Fingerprint string                `json:"fp"`
	Status      int                   `json:"status"`
	Created     *bool                 `json:"created,omitempty"`
	Txn         *protocol.Transaction `json:"txn"`
}

type idemWrite struct {
	key string
	fp  string
}

func (w *idemWrite) record(t *Txn, status int, created *bool) ([]byte, error) {
	return json.Marshal(idemRecord{Fingerprint: w.fp, Status: status, Created: created, Txn: t.Wire()})
}

// stage adds the record to a commit, on condition that the key is unused.
func (w *idemWrite) stage(c *commit, s *Store, merchantID string, t *Txn, status int, created *bool) {
	data, err := w.record(t, status, created)
	if err != nil {
		return
	}
	k := s.keys.Idem(merchantID, w.key)
	c.requireValue(k, "")
	c.setPX(k, data, IdempotencyTTL)
}

// storeIdemLate records a response that needed no commit (SET NX).
func (e *Engine) storeIdemLate(ctx context.Context, merchantID string, w *idemWrite, t *Txn) {
	status := protocol.ResultStatus(false)
	var created *bool
	if t.Version == 1 && t.Status == protocol.StatusPending {
		f := false
		created = &f
	}
	data, err := w.record(t, status, created)
	if err != nil {
		return
	}
	e.store.setIdemIfAbsent(ctx, merchantID, w.key, data)
}

// replayIdem answers from an Idempotency-Key record: done is true when the
// key was used before (replayed or refused as reused).
func (e *Engine) replayIdem(ctx context.Context, merchantID, key, fp string) (Result, bool, error) {
	raw, err := e.store.idem(ctx, merchantID, key)
	if err != nil || raw == "" {
		return Result{}, false, err
	}
	var rec idemRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return Result{}, false, err
	}
	if rec.Fingerprint != fp {
		return Result{}, true, protocol.Errorf(protocol.CodeIdempotencyKeyReused, "Idempotency-Key",
			"this Idempotency-Key was used with a different request in the last 24 h")
	}
	r := Result{Txn: rec.Txn, Status: rec.Status}
	if rec.Created != nil {
		r.Created = *rec.Created
	}
	return r, true, nil
}

// fingerprint identifies a request body for Idempotency-Key reuse checks.
func fingerprint(action string, body any) string {
	b, _ := json.Marshal(body)
	h := sha256.Sum256(append([]byte(action+"\n"), b...))
	return hex.EncodeToString(h[:])
}
