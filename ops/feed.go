package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/nodes"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// Actions of the ops feed. terminalStatusUpdate and connectionUpdate are
// the hub's own (protocol.ActionTerminalStatusUpdate, hub.ConnectionUpdate).
const (
	ActionSnapshot          = "snapshot"
	ActionTransactionUpdate = "transactionUpdate"
	ActionHeartbeats        = "heartbeats"
	ActionConflicts         = "conflicts"
	ActionConnectionUpdate  = "connectionUpdate"
)

// Snapshot is the first message of a feed: everything as it stands.
type Snapshot struct {
	Action       string                  `json:"action"`
	ServerTime   time.Time               `json:"serverTime"`
	Terminals    []TerminalRow           `json:"terminals"`
	Connections  []hub.ConnInfo          `json:"connections"` // POS and terminal connections, oldest first
	Conflicts    []hub.KeyConflict       `json:"conflicts"`
	Transactions []*protocol.Transaction `json:"transactions"` // the most recent, newest first
	// TransactionsCursor is the after of GET /v1/ops/transactions for the
	// transactions older than these; null when there are none.
	TransactionsCursor *string        `json:"transactionsCursor"`
	Nodes              []nodes.Info   `json:"nodes"`     // the live nodes of the hub (docs/cluster.md)
	Merchants          []MerchantInfo `json:"merchants"` // every merchant with its name, by id
}

// TerminalRow is a terminal of the snapshot: the row of GET /v1/ops/terminals
// plus the status of its current transaction.
type TerminalRow struct {
	protocol.TerminalInfo
	CurrentTransactionStatus protocol.Status `json:"currentTransactionStatus,omitempty"`
	// Node is the node the terminal is on (several nodes; "" alone).
	Node string `json:"node,omitempty"`
}

// StatusUpdate is the hub's terminalStatusUpdate with the terminal's
// merchant, since ops sees every merchant.
type StatusUpdate struct {
	protocol.TerminalStatusUpdate
	MerchantID string `json:"merchantId"`
}

// TransactionUpdate carries a transaction after every committed change.
// What the hub's messages about a change cause arrives after it;
// independent changes may interleave, and updates can share a version: the
// higher version wins.
type TransactionUpdate struct {
	Action      string                `json:"action"`
	Transaction *protocol.Transaction `json:"transaction"`
}

// Heartbeats refreshes, every RefreshInterval, when each connected
// terminal and each connection was last heard from.
type Heartbeats struct {
	Action      string              `json:"action"`
	ServerTime  time.Time           `json:"serverTime"`
	Terminals   []TerminalHeartbeat `json:"terminals"`
	Connections []ConnectionSeen    `json:"connections"`
	Nodes       []nodes.Info        `json:"nodes"` // the live nodes, as in the snapshot
}

// TerminalHeartbeat is a connected terminal's last sign of life.
type TerminalHeartbeat struct {
	TerminalID    string    `json:"terminalId"`
	ConnectionID  string    `json:"connectionId"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	Node          string    `json:"node,omitempty"` // the node it is on (several nodes)
}

// ConnectionSeen is a connection's last sign of life.
type ConnectionSeen struct {
	ConnectionID string    `json:"connectionId"`
	LastSeen     time.Time `json:"lastSeen"`
	Node         string    `json:"node,omitempty"` // the node it is on (several nodes)
}

// Conflicts is the fighting-keys list, sent when it changes.
type Conflicts struct {
	Action    string            `json:"action"`
	Conflicts []hub.KeyConflict `json:"conflicts"`
}

// item is one queued frame, or a transaction to send as one; conflicts
// asks the feed to re-check the fighting-keys list after sending it (a POS
// connection came or went).
type item struct {
	frame     []byte
	txn       *txnFrame
	conflicts bool
}

// txnFrame is a committed transaction's transactionUpdate, encoded by the
// first feed that sends it: the engine tells ops of a commit before the
// terminal hears of it, so the encoding is left to the feeds' goroutines.
type txnFrame struct {
	t    *protocol.Transaction // committed: only read
	once sync.Once
	b    []byte
	err  error
}

// bytes encodes the update once, as encoding/json would encode a
// TransactionUpdate (protocol's encoder writes the same bytes, faster); a
// failure is logged once and every feed skips the update.
func (f *txnFrame) bytes(log zerolog.Logger) ([]byte, error) {
	f.once.Do(func() {
		b := append(make([]byte, 0, 2048), `{"action":"`+ActionTransactionUpdate+`","transaction":`...)
		if b, f.err = f.t.AppendJSON(b); f.err != nil {
			log.Error().Err(f.err).Msg("marshal transactionUpdate")
			return
		}
		f.b = append(b, '}')
	})
	return f.b, f.err
}

// feed is one /v1/ops/ws connection's queue.
type feed struct {
	out  chan item
	slow chan struct{} // closed when the queue overflowed
	once sync.Once

	session string        // Redis key of the session that opened it; "" for the bearer token
	ended   chan struct{} // closed when that session was logged out on this hub
	endOnce sync.Once
	check   chan struct{} // the session is due for a check (SessionCheck)
}

// end closes the feed because its session was logged out.
func (f *feed) end() { f.endOnce.Do(func() { close(f.ended) }) }

func (f *feed) push(it item) {
	select {
	case f.out <- it:
	default:
		f.once.Do(func() { close(f.slow) })
	}
}

// hubObserver is the ops server as the hub's Observer: status and
// connection changes go to every feed.
type hubObserver struct{ s *Server }

// TerminalStatus sends a terminal's status change, with its merchant.
func (o hubObserver) TerminalStatus(merchantID string, u protocol.TerminalStatusUpdate) {
	o.s.publish(StatusUpdate{TerminalStatusUpdate: u, MerchantID: merchantID}, false)
}

// Connection sends a connection's coming or going; a POS connection's may
// change the fighting-keys conflicts, which feeds then read again.
func (o hubObserver) Connection(_ string, u hub.ConnectionUpdate) {
	o.s.publish(u, u.Connection.Kind == hub.KindPOS)
}

// publish marshals v and broadcasts it, when any feed is open.
func (s *Server) publish(v any, conflicts bool) {
	if !s.hasFeeds() {
		return
	}
	frame, err := json.Marshal(v)
	if err != nil {
		s.log.Error().Err(err).Msg("marshal hub update")
		return
	}
	s.broadcast(frame, conflicts)
}

// broadcast queues frame on every feed without blocking.
func (s *Server) broadcast(frame []byte, conflicts bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f := range s.feeds {
		f.push(item{frame: frame, conflicts: conflicts})
	}
}

// hasFeeds reports whether anyone listens, so that no frame is built for
// nobody.
func (s *Server) hasFeeds() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.feeds) > 0
}

// addFeed registers f (it receives every update from now on) and counts its
// goroutine; false once the server is closed.
func (s *Server) addFeed(f *feed) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	s.feeds[f] = struct{}{}
	if s.ticker == nil {
		s.armLocked()
	}
	if len(s.feeds) == 1 && s.opts.Watching != nil {
		s.opts.Watching(true)
	}
	return true
}

func (s *Server) removeFeed(f *feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.feeds, f)
	if len(s.feeds) == 0 && s.ticker != nil {
		s.ticker.Stop()
		s.ticker = nil
		s.tickGen++ // a tick already firing does nothing
	}
	if len(s.feeds) == 0 && s.opts.Watching != nil {
		s.opts.Watching(false)
	}
	s.wg.Done()
}

// armLocked schedules the next heartbeats refresh.
func (s *Server) armLocked() {
	s.tickGen++
	gen := s.tickGen
	s.ticker = s.opts.Clock.AfterFunc(s.opts.RefreshInterval, func() { s.tick(gen) })
}

// tick sends a heartbeats refresh to every feed and re-arms itself while
// there are feeds.
func (s *Server) tick(gen uint64) {
	s.mu.Lock()
	live := gen == s.tickGen && !s.closed && len(s.feeds) > 0
	s.mu.Unlock()
	if !live {
		return
	}
	// With the heartbeats every feed reads the conflicts again: one clears
	// with time alone (a window after its last displacement), with no
	// connection change to announce it.
	if frame, err := json.Marshal(s.heartbeats()); err == nil {
		s.broadcast(frame, true)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen == s.tickGen && !s.closed && len(s.feeds) > 0 {
		s.armLocked()
	}
}

func (s *Server) heartbeats() Heartbeats {
	hb := Heartbeats{Action: ActionHeartbeats, ServerTime: s.now(), Terminals: []TerminalHeartbeat{}, Connections: []ConnectionSeen{},
		Nodes: s.nodes(context.Background())}
	for _, c := range s.hub.Connections() {
		hb.Connections = append(hb.Connections, ConnectionSeen{ConnectionID: c.ConnectionID, LastSeen: c.LastSeen, Node: c.Node})
		if c.Kind == hub.KindTerminal {
			hb.Terminals = append(hb.Terminals, TerminalHeartbeat{TerminalID: c.DeviceID, ConnectionID: c.ConnectionID, LastHeartbeat: c.LastSeen, Node: c.Node})
		}
	}
	return hb
}

// nodes lists the live nodes (Options.Nodes), or none when they cannot be
// read within a second: the feed goes on without them.
func (s *Server) nodes(ctx context.Context) []nodes.Info {
	if s.opts.Nodes == nil {
		return []nodes.Info{}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	list, err := s.opts.Nodes(ctx)
	if err != nil {
		s.log.Debug().Err(err).Msg("ops feed without the node list: Redis did not answer")
		return []nodes.Info{}
	}
	return list
}

func (s *Server) now() time.Time { return s.opts.Clock.Now().UTC() }

// handleFeed serves GET /v1/ops/ws: 401 before the upgrade without the ops
// token or a live session (503 when Redis cannot tell), then a snapshot
// followed by live updates.
func (s *Server) handleFeed(w http.ResponseWriter, r *http.Request) {
	session, e := s.authenticate(r, "missing or wrong ops token")
	if e != nil {
		writeError(w, e)
		return
	}
	select {
	case <-s.done:
		writeError(w, protocol.Errorf(protocol.CodeUnavailable, "", "server is shutting down; reconnect shortly"))
		return
	default:
	}
	// The origin check of the WebSocket library stays on: the dashboard's
	// cookie would otherwise let any web page open the feed in an
	// operator's browser (cross-site WebSocket hijacking).
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		s.log.Info().Err(err).Str("origin", r.Header.Get("Origin")).Msg("ops feed upgrade refused")
		return
	}
	f := &feed{out: make(chan item, s.opts.FeedQueue), slow: make(chan struct{}),
		session: session, ended: make(chan struct{}), check: make(chan struct{}, 1)}
	// Registered before the snapshot is taken, so that nothing falls between
	// the two: an update queued meanwhile is applied on top of the snapshot.
	if !s.addFeed(f) {
		_ = ws.Close(websocket.StatusCode(protocol.CloseShutdown), protocol.ReasonShutdown)
		return
	}
	defer s.removeFeed(f)
	gauge := s.hub.Metrics().Connections.WithLabelValues(string(hub.KindOps))
	gauge.Inc()
	defer gauge.Dec()
	s.log.Info().Str("remote", s.hub.ClientAddr(r)).Msg("ops feed connected")
	s.serveFeed(ws, f)
	s.log.Info().Str("remote", s.hub.ClientAddr(r)).Msg("ops feed ended")
}

func (s *Server) serveFeed(ws *websocket.Conn, f *feed) {
	// Ops only listens; CloseRead answers pings and the close handshake and
	// ends ctx when the peer goes.
	ctx := ws.CloseRead(context.Background())
	defer ws.CloseNow()
	write := func(b []byte) bool {
		wctx, cancel := context.WithTimeout(ctx, s.opts.WriteTimeout)
		defer cancel()
		return ws.Write(wctx, websocket.MessageText, b) == nil
	}
	// A feed opened with a session checks it every SessionCheck: an open
	// dashboard counts as use, and a logout on another hub ends the feed.
	// Armed before the snapshot goes out, so that a client holding the
	// snapshot knows the check is due.
	var checkTimer clock.Timer
	arm := func() {
		if f.session != "" {
			checkTimer = s.opts.Clock.AfterFunc(s.opts.SessionCheck, func() {
				select {
				case f.check <- struct{}{}:
				default:
				}
			})
		}
	}
	arm()
	defer func() {
		if checkTimer != nil {
			checkTimer.Stop()
		}
	}()
	sn := s.snapshot(ctx)
	snap, err := json.Marshal(sn)
	if err != nil || !write(snap) {
		return
	}
	// The conflicts the feed last sent: those of the snapshot, so that a
	// conflicts frame goes out only when the list changes.
	lastConflicts, _ := json.Marshal(Conflicts{Action: ActionConflicts, Conflicts: sn.Conflicts})
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.ended:
			_ = ws.Close(websocket.StatusPolicyViolation, "ops session ended")
			return
		case <-f.check:
			// Redis not answering keeps the feed: it is what an operator
			// watches during an outage.
			live, err := s.touchSession(ctx, f.session)
			if err == nil && !live {
				_ = ws.Close(websocket.StatusPolicyViolation, "ops session ended")
				return
			}
			arm()
		case <-s.done:
			_ = ws.Close(websocket.StatusCode(protocol.CloseShutdown), protocol.ReasonShutdown)
			return
		case <-f.slow:
			s.log.Warn().Int("queue", cap(f.out)).Msg("ops feed too slow: dropped")
			_ = ws.Close(websocket.StatusPolicyViolation, "feed too slow; reconnect")
			return
		case it := <-f.out:
			frame := it.frame
			if it.txn != nil {
				var err error
				if frame, err = it.txn.bytes(s.log); err != nil {
					continue
				}
			}
			if !write(frame) {
				return
			}
			if !it.conflicts {
				continue
			}
			b, err := json.Marshal(Conflicts{Action: ActionConflicts, Conflicts: nonNil(s.hub.Conflicts())})
			if err != nil || bytes.Equal(b, lastConflicts) {
				continue
			}
			lastConflicts = b
			if !write(b) {
				return
			}
		}
	}
}

// snapshot gathers every terminal, connection, conflict and the recent
// transactions. A store error leaves the transactions out; the feed still
// runs.
func (s *Server) snapshot(ctx context.Context) Snapshot {
	recent, cursor := s.recent(ctx)
	snap := Snapshot{
		Action: ActionSnapshot, ServerTime: s.now(),
		Connections: nonNil(s.hub.Connections()), Conflicts: nonNil(s.hub.Conflicts()),
		Terminals: []TerminalRow{}, Transactions: recent, TransactionsCursor: cursor, Nodes: s.nodes(ctx),
		Merchants: s.merchants(),
	}
	byID := make(map[string]*protocol.Transaction, len(snap.Transactions))
	for _, t := range snap.Transactions {
		byID[t.ID] = t
	}
	for _, t := range s.hub.AllTerminals() {
		row := TerminalRow{TerminalInfo: t, Node: s.hub.TerminalNode(t.TerminalID)}
		if id := t.CurrentTransactionID; id != "" {
			if cur := byID[id]; cur != nil {
				row.CurrentTransactionStatus = cur.Status
			} else if s.opts.Engine != nil {
				cur, err := s.opts.Engine.Get(ctx, t.MerchantID, id)
				if err == nil && cur != nil {
					row.CurrentTransactionStatus = cur.Status
				}
			}
		}
		snap.Terminals = append(snap.Terminals, row)
	}
	return snap
}

// recent returns the newest transactions of every merchant, newest first,
// and the cursor of the older ones (nil when there are none).
func (s *Server) recent(ctx context.Context) ([]*protocol.Transaction, *string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ms := s.hub.Directory().MerchantIDs()
	sort.Strings(ms)
	page, err := s.listAcross(ctx, ms, session.Filter{Limit: min(s.opts.Recent, MaxTransactionsPage)}, opsCursor{})
	if err != nil {
		s.log.Warn().Err(err).Msg("could not list recent transactions for the ops snapshot")
		return []*protocol.Transaction{}, nil
	}
	return page.Data, page.NextCursor
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
