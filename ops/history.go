package ops

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/termhub/termhub/protocol"
)

// Limits of the terminal status history.
const (
	// StatusEventsKept is how many status changes Redis keeps per terminal:
	// enough for an operator to see a terminal flapping, small enough that
	// a terminal reconnecting all day costs a few kilobytes.
	StatusEventsKept = 100
	// statusQueue is how many changes may wait for Redis before more are
	// dropped (logged): the history is an aid, never a reason to hold the
	// hub back.
	statusQueue = 4096
)

// StatusEvent is one status change of a terminal, as kept in Redis
// (keys.Space.TerminalEvents) and listed by
// GET /v1/ops/terminals/{terminalId}/events.
type StatusEvent struct {
	Status         string    `json:"status"`
	PreviousStatus string    `json:"previousStatus"`
	ConnectionID   string    `json:"connectionId"`
	At             time.Time `json:"at"`
}

// statusKey is what tells a change from a repeat of the one before.
type statusKey struct{ status, conn string }

// statusWrite is a change waiting to be written.
type statusWrite struct {
	merchantID string
	deviceID   string
	ev         StatusEvent
}

// recordStatus queues a status change for Redis. It is the hub's
// OnStatusChange hook, called under the hub's lock: it only appends to a
// queue, and one goroutine at a time (started here when none runs) writes
// the queue out in order.
func (s *Server) recordStatus(merchantID string, u protocol.TerminalStatusUpdate) {
	w := statusWrite{merchantID: merchantID, deviceID: u.TerminalID, ev: StatusEvent{
		Status: u.Status, PreviousStatus: u.PreviousStatus, ConnectionID: u.ConnectionID, At: u.Timestamp.UTC()}}
	s.histMu.Lock()
	defer s.histMu.Unlock()
	// A terminal connection whose claim of its device failed (Redis down)
	// is announced again, unchanged, once the claim settles (hub
	// settleClaim): one entry is enough.
	last := statusKey{status: u.Status, conn: u.ConnectionID}
	if s.histLast[u.TerminalID] == last {
		return
	}
	if s.histStopped {
		return
	}
	if len(s.histQueue) >= statusQueue {
		s.histDropped++ // not remembered as the last: its repeat may be recorded
		return
	}
	if s.histLast == nil {
		s.histLast = map[string]statusKey{}
	}
	s.histLast[u.TerminalID] = last
	s.histQueue = append(s.histQueue, w)
	if s.histRunning {
		return
	}
	s.histRunning = true
	s.histWG.Add(1)
	go s.writeStatuses()
}

// StopHistory stops recording status changes and waits (within ctx) for
// those queued to be written. The history outlives the feeds (Close):
// the terminals a draining node lets go turn reconnecting after its feeds
// ended, and those changes are recorded too; it is stopped with the rest of
// the node's background work. When ctx ends first, what is still queued is
// given up (and counted in the log) rather than written after the node
// let Redis go.
func (s *Server) StopHistory(ctx context.Context) error {
	s.histMu.Lock()
	s.histStopped = true
	s.histMu.Unlock()
	err := waitWithin(ctx, &s.histWG)
	if err != nil {
		s.histAbandon.Store(true)
	}
	return err
}

// writeStatuses writes the queued changes, each with its list's trim, until
// the queue is empty.
func (s *Server) writeStatuses() {
	defer s.histWG.Done()
	for {
		s.histMu.Lock()
		batch := s.histQueue
		s.histQueue = nil
		dropped := s.histDropped
		s.histDropped = 0
		if len(batch) == 0 {
			s.histRunning = false
			s.histMu.Unlock()
			return
		}
		s.histMu.Unlock()
		if dropped > 0 {
			s.log.Warn().Int("dropped", dropped).Msg("terminal status history: changes dropped while Redis was slow")
		}
		for i := 0; i < len(batch); i += statusPipeline {
			if s.histAbandon.Load() {
				s.log.Warn().Int("dropped", len(batch)-i).Msg("terminal status history: changes not recorded at shutdown")
				break
			}
			s.writeStatusBatch(batch[i:min(i+statusPipeline, len(batch))])
		}
	}
}

// statusPipeline is how many changes go to Redis in one pipeline: a storm
// of reconnects queues thousands at once, and one round trip (and one
// context) per change would cost the node more than the changes are worth.
const statusPipeline = 256

// writeStatusBatch pushes changes onto their terminals' lists, each followed
// by its list's trim, in one pipeline (each key is in its merchant's hash
// slot; on a cluster the client splits the pipeline by node). A change
// pushed and not yet trimmed leaves its list one longer until the next. A
// failure loses these entries of the history only.
func (s *Server) writeStatusBatch(ws []statusWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	pipe := s.opts.Redis.Pipeline()
	for _, w := range ws {
		b, err := json.Marshal(w.ev)
		if err != nil {
			continue
		}
		key := s.opts.Keys.TerminalEvents(w.merchantID, w.deviceID)
		pipe.LPush(ctx, key, b)
		pipe.LTrim(ctx, key, 0, StatusEventsKept-1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.log.Debug().Err(err).Int("changes", len(ws)).Msg("terminal status history: changes not recorded")
	}
}

// StatusEvents returns a terminal's recorded status changes, newest first,
// at most limit of them.
func (s *Server) StatusEvents(ctx context.Context, merchantID, deviceID string, limit int) ([]StatusEvent, error) {
	out := []StatusEvent{}
	if s.opts.Redis == nil {
		return out, nil
	}
	raw, err := s.opts.Redis.LRange(ctx, s.opts.Keys.TerminalEvents(merchantID, deviceID), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, err
	}
	for _, r := range raw {
		var ev StatusEvent
		if json.Unmarshal([]byte(r), &ev) == nil {
			out = append(out, ev)
		}
	}
	return out, nil
}

// handleTerminalEvents serves GET /v1/ops/terminals/{terminalId}/events:
// the terminal's recent status changes, newest first.
func (s *Server) handleTerminalEvents(w http.ResponseWriter, r *http.Request) {
	if _, e := s.authenticate(r, "missing or wrong ops token"); e != nil {
		writeError(w, e)
		return
	}
	id := r.PathValue("terminalId")
	t, ok := s.hub.Directory().Terminal(id)
	if !ok {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "terminalId", "no terminal %q", id))
		return
	}
	limit, e := queryLimit(r, 20, StatusEventsKept)
	if e != nil {
		writeError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	evs, err := s.StatusEvents(ctx, t.MerchantID, id, limit)
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeUnavailable, "", "the status history could not be read (Redis does not answer); retry shortly"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": evs})
}

// queryLimit reads the limit query parameter: def when absent, 1..max
// otherwise.
func queryLimit(r *http.Request, def, max int) (int, *protocol.Error) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return def, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > max {
		return 0, protocol.Invalid("limit", "must be a whole number from 1 to %d", max)
	}
	return n, nil
}
