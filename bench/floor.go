package bench

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/queue"
)

// Floor is the bare durable relay the hub is compared with: the same
// endpoints and message sequence as the hub for a payment (payment →
// paymentResponse + startPayment; commandReceived → paymentStatusUpdate
// DISPATCHED; paymentResult → paymentComplete + resultAck; ack), with no
// rules at all, and exactly one pipelined Redis write per inbound message
// (an XADD and a SET, or for an ack a SET and an XTRIM) whose reply it
// waits for before it answers, so that every message it sends is as
// durable as the hub's. An ack is stored off the reader, as the hub's are
// (floorConn.ack): a floor that held its reader for each ack's round trip
// would be slower than it needs to be and flatter every ratio. It trusts
// the id header of a connection and checks no signature.
type Floor struct {
	rdb    redis.UniversalClient
	prefix string
	seq    atomic.Uint64

	mu    sync.Mutex
	terms map[string]*floorConn // by device id
	pos   map[string]*floorConn // by API key id
	txns  map[string]*floorTxn
}

type floorConn struct {
	ws *websocket.Conn
	id string

	ackMu   sync.Mutex
	lastAck chan struct{} // closed once the newest ack is stored; nil: none yet
}

func (c *floorConn) write(ctx context.Context, b []byte) {
	_ = c.ws.Write(ctx, websocket.MessageText, b)
}

// reply answers a request of c once the acks it sent before are stored,
// as the hub's replies do: the ack's write overlaps the request's own
// instead of holding the reader for a round trip of Redis.
func (c *floorConn) reply(ctx context.Context, b []byte) {
	c.ackMu.Lock()
	last := c.lastAck
	c.ackMu.Unlock()
	if last != nil {
		select {
		case <-last:
		case <-ctx.Done():
		}
	}
	c.write(ctx, b)
}

// ack stores an ack off the reader, after the acks before it (an older
// cursor must not land last).
func (c *floorConn) ack(ctx context.Context, store func(context.Context) error, fail func()) {
	done := make(chan struct{})
	c.ackMu.Lock()
	prev := c.lastAck
	c.lastAck = done
	c.ackMu.Unlock()
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		if store(ctx) != nil {
			fail()
		}
	}()
}

// floorTxn is the floor's whole idea of a payment.
type floorTxn struct {
	ID          string `json:"id"`
	TerminalID  string `json:"terminalId"`
	Status      string `json:"status"`
	AmountMinor int64  `json:"amountMinor"`
	Currency    string `json:"currency"`
	Reference   string `json:"reference"`
	AuthCode    string `json:"authCode,omitempty"`
	Version     int64  `json:"version"`
	pos         string
}

// floorIn is every field the floor reads from an inbound frame.
type floorIn struct {
	Action        string          `json:"action"`
	RequestID     json.RawMessage `json:"requestId"`
	TerminalID    string          `json:"terminalId"`
	AmountMinor   int64           `json:"amountMinor"`
	Currency      string          `json:"currency"`
	Reference     string          `json:"reference"`
	TransactionID string          `json:"transactionId"`
	Outcome       string          `json:"outcome"`
	AuthCode      string          `json:"authCode"`
	MessageID     string          `json:"messageId"`
}

// NewFloor returns a relay writing under prefix in rdb.
func NewFloor(rdb redis.UniversalClient, prefix string) *Floor {
	return &Floor{rdb: rdb, prefix: prefix, terms: map[string]*floorConn{}, pos: map[string]*floorConn{}, txns: map[string]*floorTxn{}}
}

// Handler serves the POS and terminal WebSockets and /readyz.
func (f *Floor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pos/ws", func(w http.ResponseWriter, r *http.Request) {
		f.serve(w, r, r.Header.Get(protocol.HeaderAPIKey), f.pos, f.handlePOS)
	})
	mux.HandleFunc("GET /v1/terminal/ws", func(w http.ResponseWriter, r *http.Request) {
		f.serve(w, r, r.Header.Get(protocol.HeaderDeviceID), f.terms, f.handleTerminal)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := f.rdb.Ping(r.Context()).Err(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	return mux
}

func (f *Floor) serve(w http.ResponseWriter, r *http.Request, id string, reg map[string]*floorConn,
	handle func(ctx context.Context, c *floorConn, in *floorIn)) {
	if id == "" {
		http.Error(w, "missing id header", http.StatusUnauthorized)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ws.SetReadLimit(protocol.MaxFrameBytes)
	c := &floorConn{ws: ws, id: id}
	ctx := r.Context()
	f.mu.Lock()
	if old := reg[id]; old != nil {
		_ = old.ws.CloseNow()
	}
	reg[id] = c
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		if reg[id] == c {
			delete(reg, id)
		}
		f.mu.Unlock()
		_ = ws.CloseNow()
	}()
	c.write(ctx, []byte(`{"action":"connected","connectionId":"fconn_`+strconv.FormatUint(f.seq.Add(1), 10)+`"}`))
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var in floorIn
		if json.Unmarshal(data, &in) != nil {
			return
		}
		handle(ctx, c, &in)
	}
}

// write runs the one pipelined Redis write of an inbound message: an XADD
// of data to stream and a SET of key (or, for ack, see handlePOS). It
// returns the new stream id.
func (f *Floor) write(ctx context.Context, stream string, data []byte, key string, value []byte) (string, error) {
	var xa *redis.StringCmd
	_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		xa = p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"m", data}})
		p.Set(ctx, key, value, 0)
		return nil
	})
	if err != nil {
		return "", err
	}
	return xa.Val(), nil
}

func (f *Floor) fail(ctx context.Context, c *floorConn, in *floorIn, code protocol.Code, msg string) {
	b, _ := json.Marshal(protocol.NewErrorReply(in.RequestID, &protocol.Error{Code: code, Message: msg}))
	c.reply(ctx, b)
}

func (f *Floor) handlePOS(ctx context.Context, c *floorConn, in *floorIn) {
	switch in.Action {
	case protocol.ActionPayment:
		t := &floorTxn{ID: "ftx_" + strconv.FormatUint(f.seq.Add(1), 10), TerminalID: in.TerminalID, Status: "PENDING",
			AmountMinor: in.AmountMinor, Currency: in.Currency, Reference: in.Reference, Version: 1, pos: c.id}
		start, _ := json.Marshal(protocol.StartPayment{Action: protocol.ActionStartPayment, TransactionID: t.ID, Type: "sale",
			AmountMinor: t.AmountMinor, Amount: protocol.FormatAmount(t.AmountMinor, t.Currency), Currency: t.Currency, Reference: t.Reference})
		state, _ := json.Marshal(t)
		if _, err := f.write(ctx, f.prefix+"cmd:"+t.TerminalID, start, f.prefix+"txn:"+t.ID, state); err != nil {
			f.fail(ctx, c, in, protocol.CodeInternal, err.Error())
			return
		}
		f.mu.Lock()
		term := f.terms[t.TerminalID]
		if term != nil {
			f.txns[t.ID] = t
		}
		f.mu.Unlock()
		if term == nil {
			f.fail(ctx, c, in, protocol.CodeTerminalOffline, "terminal is offline")
			return
		}
		created := true
		reply, _ := json.Marshal(struct {
			Action      string          `json:"action"`
			RequestID   json.RawMessage `json:"requestId,omitempty"`
			Transaction *floorTxn       `json:"transaction"`
			Created     *bool           `json:"created"`
		}{protocol.ResponseAction(in.Action), in.RequestID, t, &created})
		c.reply(ctx, reply)
		term.write(ctx, start)
	case protocol.ActionAck:
		stream, mid := f.prefix+"outbox:"+c.id, in.MessageID
		c.ack(ctx, func(ctx context.Context) error {
			_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, f.prefix+"ack:"+c.id, mid, 0)
				p.XTrimMinID(ctx, stream, mid)
				return nil
			})
			return err
		}, func() { // not through reply: it would wait for this very ack
			b, _ := json.Marshal(protocol.NewErrorReply(in.RequestID, &protocol.Error{Code: protocol.CodeInternal, Message: "ack not stored"}))
			c.write(ctx, b)
		})
	default:
		f.fail(ctx, c, in, protocol.CodeUnknownAction, "the floor relays payments only")
	}
}

func (f *Floor) handleTerminal(ctx context.Context, c *floorConn, in *floorIn) {
	f.mu.Lock()
	t := f.txns[in.TransactionID]
	f.mu.Unlock()
	if t == nil {
		f.fail(ctx, c, in, protocol.CodeTransactionNotFound, "no such transaction")
		return
	}
	var action string
	switch in.Action {
	case protocol.ActionCommandReceived:
		action = protocol.ActionPaymentStatusUpdate
		f.mu.Lock()
		t.Status = "DISPATCHED"
		t.Version++
		f.mu.Unlock()
	case protocol.ActionPaymentResult:
		action = protocol.ActionPaymentComplete
		f.mu.Lock()
		t.Status, t.AuthCode = "COMPLETED", in.AuthCode
		if in.Outcome != protocol.OutcomeApproved {
			t.Status = "DECLINED"
		}
		t.Version++
		delete(f.txns, t.ID)
		f.mu.Unlock()
	default:
		f.fail(ctx, c, in, protocol.CodeUnknownAction, "the floor relays payments only")
		return
	}
	f.mu.Lock()
	snap := *t
	f.mu.Unlock()
	msg, _ := json.Marshal(struct {
		Action        string    `json:"action"`
		TerminalID    string    `json:"terminalId"`
		TransactionID string    `json:"transactionId"`
		Version       int64     `json:"version"`
		Transaction   *floorTxn `json:"transaction"`
		Timestamp     time.Time `json:"timestamp"`
	}{action, snap.TerminalID, snap.ID, snap.Version, &snap, time.Now().UTC()})
	state, _ := json.Marshal(&snap)
	id, err := f.write(ctx, f.prefix+"outbox:"+snap.pos, msg, f.prefix+"txn:"+snap.ID, state)
	if err != nil {
		f.fail(ctx, c, in, protocol.CodeInternal, err.Error())
		return
	}
	f.mu.Lock()
	p := f.pos[snap.pos]
	f.mu.Unlock()
	if p != nil {
		p.write(ctx, queue.Entry{ID: id, Data: msg}.Frame())
	}
	if in.Action == protocol.ActionPaymentResult {
		c.write(ctx, []byte(`{"action":"resultAck","transactionId":"`+snap.ID+`"}`))
	}
}

// ServeFloor runs a floor relay on addr until ctx ends.
func ServeFloor(ctx context.Context, addr string, rdb redis.UniversalClient, prefix string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: NewFloor(rdb, prefix).Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
