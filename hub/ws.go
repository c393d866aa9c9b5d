package hub

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/termhub/termhub/internal/wsconn"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// servePOS upgrades an authenticated POS to a WebSocket and serves it.
func (h *Hub) servePOS(w http.ResponseWriter, r *http.Request) {
	p, ok := h.admit(w, r, KindPOS, h.authPOS)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.RequestTimeout)
	hadSession := h.displaceSession(ctx, p.MerchantID, p.KeyID)
	cancel()
	h.serveConn(w, r, KindPOS, p, func(c *conn) {
		h.registerPOS(c, h.claimKey(c, hadSession))
		go h.replay(c)
	}, h.unregisterPOS, h.handlePOSFrames)
}

// serveTerminal upgrades an authenticated terminal and serves it.
func (h *Hub) serveTerminal(w http.ResponseWriter, r *http.Request) {
	p, ok := h.admit(w, r, KindTerminal, func(r *http.Request, _ []byte) (Principal, *protocol.Error) { return h.authTerminal(r) })
	if !ok {
		return
	}
	h.serveConn(w, r, KindTerminal, p, h.terminalUp, h.terminalDown, h.handleTerminalFrames)
}

// admit refuses upgrades while draining and checks credentials (401 before
// the upgrade, so a client sees why).
func (h *Hub) admit(w http.ResponseWriter, r *http.Request, kind Kind, auth func(*http.Request, []byte) (Principal, *protocol.Error)) (Principal, bool) {
	if h.draining.Load() {
		WriteError(w, protocol.Errorf(protocol.CodeUnavailable, "", "server is shutting down; reconnect shortly"))
		return Principal{}, false
	}
	if e := h.addrBlocked(r); e != nil {
		WriteError(w, e)
		return Principal{}, false
	}
	p, e := auth(r, nil)
	if e != nil {
		id := p.KeyID
		if kind == KindTerminal {
			id = p.DeviceID
		}
		WriteError(w, h.AuthFailed(r, string(kind), id, e))
		return Principal{}, false
	}
	// A connect counts against the key's or terminal's budget: a client
	// reconnecting in a tight loop is slowed before it costs an upgrade.
	if kind == KindTerminal {
		e = h.allowTerminal(p.DeviceID)
	} else {
		e = h.allowKey(p.KeyID)
	}
	if e != nil {
		WriteError(w, e)
		return Principal{}, false
	}
	return p, true
}

// Write buffer sizes of an upgraded connection. Buffers are much of an idle
// connection's memory, so they are as small as the traffic allows. A
// writer holds one typical frame with its header, so that the frame goes
// out in one write (a bigger one takes two): a POS is sent replies and
// events of often ~1.5 KB, a terminal commands of a few hundred bytes.
const (
	wsWriteBuffer         = 2 << 10
	wsTerminalWriteBuffer = 1 << 10
)

// writeBufferSize is the write buffer of a connection of kind.
func writeBufferSize(kind Kind) int {
	if kind == KindTerminal {
		return wsTerminalWriteBuffer
	}
	return wsWriteBuffer
}

// serveConn upgrades and registers one connection, then hands it to a
// goroutine of its own (readConn) and returns. Returning frees what net/http
// holds while its handler runs and the hijacked connection no longer needs:
// its goroutine and that goroutine's stack, and its connection, request and
// response structs.
func (h *Hub) serveConn(w http.ResponseWriter, r *http.Request, kind Kind, p Principal,
	register, unregister func(*conn), handle func(*conn, [][]byte) error) {
	c := h.newConn(nil, kind, p.MerchantID, p.KeyID, p.DeviceID)
	// The connection gets small buffers of its own and nonblocking writes,
	// and its 101 leaves with the greeting (wsconn.ResponseWriter).
	hw := &wsconn.ResponseWriter{ResponseWriter: w, WriteBuffer: writeBufferSize(kind), HoldSwitch: true, OnTail: c.tailed}
	ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{
		// Credentials are HMAC signatures, not cookies, so a cross-origin
		// page gains nothing it could not sign itself.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
		OnPongReceived:     func(context.Context, []byte) { c.touch() },
	})
	if err != nil {
		c.log.Info().Err(err).Msg("upgrade failed")
		c.cancel() // its context would otherwise hang off the hub's until shutdown
		return
	}
	ws.SetReadLimit(-1) // readLoop enforces 64 KiB itself, to close with 4400
	c.ws, c.spill, c.rbuf = ws, hw.Conn, hw.Reader
	c.closeOnEnd()
	// Counted under h.mu so that Drain, which sets draining under h.mu before
	// it waits, never sees an Add after its Wait began. The count is the
	// connection's, not the handler's: readConn ends it.
	h.mu.Lock()
	if h.draining.Load() {
		h.mu.Unlock()
		_ = ws.Close(websocket.StatusCode(protocol.CloseShutdown), protocol.ReasonShutdown)
		c.cancel()
		return
	}
	h.conns.Add(1)
	h.mu.Unlock()
	gauge := h.metrics.Connections.WithLabelValues(string(kind))
	gauge.Inc()

	// A kicked connection leaves the registry at once, not after its close
	// handshake (which a stale peer never answers).
	c.leave = sync.OnceFunc(func() {
		c.stopHeartbeat()
		unregister(c)
	})
	c.startHeartbeat()
	// Registration stays in the handler's goroutine, whose stack has grown
	// already and goes when it returns; the reader's stays small. Until it
	// is done nothing reads the peer's pongs: a terminal's resume may wait
	// for Redis (up to request_timeout), and the peer is not stale for it.
	c.busy.Store(true)
	c.protect(func() { register(c) })
	c.busy.Store(false)
	go h.readConn(c, gauge, handle)
}

// readConn reads c until the connection ends, then unregisters it, waits
// for its writer to finish and releases its count.
func (h *Hub) readConn(c *conn, gauge prometheus.Gauge, handle func(*conn, [][]byte) error) {
	defer h.conns.Done()
	defer gauge.Dec()
	c.protect(func() { c.readLoop(func(frames [][]byte) error { return handle(c, frames) }) })
	c.protect(func() {
		c.leave()
		c.disconnect(&protocol.Disconnect{Code: protocol.CloseCode(websocket.StatusNormalClosure)})
		c.waitWritten()
		c.cancel()
	})
}

// terminalUp registers a terminal and, under the device's lock so that a
// drop and a reconnect are applied in order, resumes its transactions and
// re-sends its open commands. If Redis does not answer, the terminal is
// online all the same, and the resume is tried again until it succeeds or
// the connection is no longer the device's.
func (h *Hub) terminalUp(c *conn) {
	unlock := h.lockDevice(c.deviceID)
	if h.opts.Engine != nil {
		c.wmu.Lock()
		c.resuming = true
		c.wmu.Unlock()
	}
	// Recorded in Redis before the greeting (claimDevice); if Redis does
	// not answer, the resume records it.
	h.claimDevice(c)
	h.registerTerminal(c, c.epoch)
	if h.opts.Engine == nil || h.resume(c) {
		unlock()
		return
	}
	unlock()
	go func() {
		for attempt := 0; h.waitStore(c.ctx, attempt); attempt++ {
			unlock := h.lockDevice(c.deviceID)
			h.mu.Lock()
			still := h.terminals[c.deviceID] == c
			h.mu.Unlock()
			done := !still || h.resume(c)
			unlock()
			if done {
				return
			}
		}
	}()
}

// resume tells the engine the terminal is back and queues the commands
// still open for it; false when Redis did not answer (nothing is queued).
// It runs under the device's lock.
func (h *Hub) resume(c *conn) bool {
	h.mu.Lock()
	current := h.terminals[c.deviceID] == c
	h.mu.Unlock()
	if !current {
		return true // displaced before it was resumed: the new connection resumes
	}
	if !h.settleClaim(c) {
		return false
	}
	ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
	cmds, err := h.opts.Engine.TerminalConnected(ctx, c.merchantID, c.deviceID, c.id)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("could not resume the terminal's transactions yet; trying again once Redis answers")
		}
		return false
	}
	// A sale committed while the commands were read was sent live as well
	// as found open (the engine orders the two: TerminalConnected waits
	// for a create of the device to finish, and the other way round); the
	// copy already sent is not sent again.
	c.wmu.Lock()
	live := c.sentLive
	c.resuming, c.sentLive = false, nil
	c.wmu.Unlock()
	// Queued as replayed frames, like a POS replay: however many commands
	// are open, they never overflow the terminal's small queue.
	for _, cmd := range cmds {
		b, ok := c.marshal(cmd) // as SendTerminal does, so that equal commands are equal bytes
		if !ok {
			continue
		}
		if i := slices.IndexFunc(live, func(l []byte) bool { return bytes.Equal(l, b) }); i >= 0 {
			live = slices.Delete(live, i, i+1)
			continue
		}
		if !c.queueReplay(b) {
			break
		}
	}
	return true
}

// terminalDown starts the grace period of a terminal whose registered
// connection ended (not of one that was displaced). If Redis does not
// answer, the terminal is reconnecting all the same, and the engine is
// told later (with the grace deadline of this drop), unless the terminal
// has connected again since (its resume, or its next drop, covers it).
func (h *Hub) terminalDown(c *conn) {
	unlock := h.lockDevice(c.deviceID)
	if !h.unregisterTerminal(c) || h.opts.Engine == nil && h.node == nil {
		unlock()
		return
	}
	until := h.graceUntilOf(c.deviceID)
	conns := h.connsOf(c.deviceID)
	done := h.dropped(c, until)
	unlock()
	if done {
		return
	}
	go func() {
		for attempt := 0; h.waitStore(h.baseCtx, attempt); attempt++ {
			unlock := h.lockDevice(c.deviceID)
			// A connection of the device since: its resume (or its own
			// drop, with its own grace period) covers this one.
			done := h.connsOf(c.deviceID) != conns || h.dropped(c, until)
			unlock()
			if done {
				return
			}
		}
	}()
}

// dropped records the drop in the device's shared record, if any, and
// tells the engine the terminal's transactions lost it; false when Redis
// did not answer. A drop the shared record no longer cares about (a newer
// connection, or this node's release as dead, came first) is done at
// once. It runs under the device's lock.
func (h *Hub) dropped(c *conn, until time.Time) bool {
	if h.node != nil && !c.dropRecorded {
		ours, err := h.dropShared(c, until)
		if err != nil {
			c.log.Warn().Err(err).Msg("could not record the terminal's drop in Redis yet; trying again once Redis answers")
			return false
		}
		c.dropRecorded = true
		if !ours {
			h.mu.Lock()
			h.refreshLocalLocked(c)
			h.mu.Unlock()
			return true
		}
	}
	if h.opts.Engine == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, h.opts.RequestTimeout)
	defer cancel()
	if err := h.opts.Engine.TerminalDropped(ctx, c.merchantID, c.deviceID, until); err != nil {
		c.log.Warn().Err(err).Msg("could not start the grace period of the terminal's transactions yet; trying again once Redis answers")
		return false
	}
	return true
}

// handlePOSFrames serves a POS's frames one by one.
func (h *Hub) handlePOSFrames(c *conn, frames [][]byte) error {
	for _, data := range frames {
		if err := h.handlePOSFrame(c, data); err != nil {
			return err
		}
	}
	return nil
}

// handlePOSFrame decodes and serves one POS frame. Frames of one connection
// are served in order; an ack is applied beside the frames after it, which
// answer only once it is stored (acks.go).
func (h *Hub) handlePOSFrame(c *conn, data []byte) error {
	start, label := time.Now(), "invalid"
	defer func() { h.observeFrame(KindPOS, start, label) }()
	// The request has request_timeout to get its answer (docs/ops.md#when-redis-stalls-restarts-or-fails-over),
	// waits for earlier acks included.
	ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
	defer cancel()
	in, err := protocol.DecodePOS(data)
	// Acks are never refused: they free what the hub keeps for the POS.
	if e := h.frameLimited(c, err == nil && in.Action == protocol.ActionAck); e != nil {
		label = "rate_limited"
		h.reply(ctx, c, protocol.NewErrorReply(in.RequestID, e))
		return nil
	}
	if err != nil {
		return h.replyDecodeError(ctx, c, in, err)
	}
	label = in.Action // a known action: decoding succeeded
	if e := h.scopeOf(c.keyID, in.Body); e != nil {
		h.reply(ctx, c, protocol.NewErrorReply(in.RequestID, e))
		return nil
	}
	switch body := in.Body.(type) {
	case *protocol.ListTerminalsRequest:
		h.reply(ctx, c, protocol.TerminalsReply{Action: protocol.ActionTerminals, RequestID: in.RequestID, Terminals: h.Terminals(c.merchantID)})
		return nil
	case *protocol.AckRequest:
		h.queueAck(c, in.RequestID, body.MessageID) // applied off the reader (acks.go)
		return nil
	}
	replied := false
	answer := func(res session.Result) {
		reply := protocol.Response{Action: protocol.ResponseAction(in.Action), RequestID: in.RequestID, Transaction: res.Txn}
		if in.Action == protocol.ActionPayment {
			created := res.Created
			reply.Created = &created
		}
		h.reply(ctx, c, reply)
		replied = true
	}
	// The reply goes out between the commit and the delivery of what it
	// caused, so the POS never sees an outcome before the answer.
	res, err := h.Perform(session.WithReply(ctx, answer), Principal{MerchantID: c.merchantID, KeyID: c.keyID}, in.Body, idempotencyKeyOf(in.Body))
	switch {
	case err != nil:
		pe := h.ClientError(err, c.log)
		if pe.Field == protocol.HeaderIdemKey {
			pe = &protocol.Error{Code: pe.Code, Message: pe.Message, Field: "idempotencyKey"}
		}
		h.reply(ctx, c, protocol.NewErrorReply(in.RequestID, pe))
	case !replied:
		answer(res)
	}
	return nil
}

// reply answers a frame of c. A POS's reply first waits for the acks it
// sent before (acks.go), so a POS that has its answer can rely on them —
// unless Redis does not store them within the request's time (ctx): the
// answer is then sent anyway (it is an unavailable error, or the outcome
// of what did not need Redis), and those acks may be sent again.
// (The replies to acks themselves, sent by the ack goroutine, do not come
// here: they would wait for themselves.)
func (h *Hub) reply(ctx context.Context, c *conn, v any) {
	if c.kind == KindPOS {
		h.WaitAcks(ctx, c.merchantID, c.keyID)
	}
	c.sendNowJSON(v)
}

// isResult reports whether a terminal's action is a result.
func isResult(action string) bool {
	switch action {
	case protocol.ActionPaymentResult, protocol.ActionVoidResult, protocol.ActionCaptureResult:
		return true
	}
	return false
}

// scopeOf refuses a POS request its key's scopes do not allow: creating or
// changing a transaction needs terminal:write, reading one or the
// terminals terminal:read; acks need neither. The scopes are looked up in
// the directory in force, so a reload that takes one away applies to open
// connections too.
func (h *Hub) scopeOf(keyID string, body any) *protocol.Error {
	k, _ := h.Directory().Key(keyID)
	p := Principal{CanWrite: k.CanWrite, CanRead: k.CanRead}
	switch body.(type) {
	case *protocol.PaymentRequest, *protocol.RefundRequest, *protocol.CancelRequest,
		*protocol.VoidRequest, *protocol.CaptureRequest, *protocol.SignatureVerificationRequest:
		return p.RequireWrite()
	case *protocol.GetTransactionStatusRequest, *protocol.ListTerminalsRequest:
		return p.RequireRead()
	}
	return nil
}

// idempotencyKeyOf returns the idempotencyKey field of a WebSocket request.
func idempotencyKeyOf(body any) string {
	switch r := body.(type) {
	case *protocol.PaymentRequest:
		return r.IdempotencyKey
	case *protocol.RefundRequest:
		return r.IdempotencyKey
	case *protocol.CancelRequest:
		return r.IdempotencyKey
	case *protocol.VoidRequest:
		return r.IdempotencyKey
	case *protocol.CaptureRequest:
		return r.IdempotencyKey
	case *protocol.SignatureVerificationRequest:
		return r.IdempotencyKey
	}
	return ""
}

// handleTerminalFrames decodes and serves frames a terminal sent together.
// The engine applies their events in one go (consecutive events about one
// transaction in one commit); answers and errors come in frame order, as if
// each frame had been served alone.
func (h *Hub) handleTerminalFrames(c *conn, frames [][]byte) error {
	start := time.Now()
	labels := make([]string, len(frames))
	defer func() {
		for _, l := range labels {
			h.observeFrame(KindTerminal, start, l)
		}
	}()
	// Decoded frames wait in run until a frame that fails to decode (whose
	// error reply must come after their outcome), or the end.
	var run []protocol.Inbound
	flush := func() {
		if len(run) == 0 {
			return
		}
		bodies := make([]any, len(run))
		for i, in := range run {
			bodies[i] = in.Body
		}
		refused := func(i int, err error) {
			h.reply(c.ctx, c, protocol.NewErrorReply(run[i].RequestID, h.ClientError(err, c.log)))
		}
		if e := h.opts.Engine; e != nil {
			ctx, cancel := context.WithTimeout(c.ctx, h.opts.RequestTimeout)
			e.TerminalEvents(ctx, c.merchantID, c.deviceID, bodies, refused)
			cancel()
		} else {
			for i := range run {
				refused(i, ErrNoEngine)
			}
		}
		run = run[:0]
	}
	for i, data := range frames {
		labels[i] = "invalid"
		in, err := protocol.DecodeTerminal(data)
		// A terminal's results are never refused (docs/protocol.md#credentials): they may
		// be the only record of a charge.
		if e := h.frameLimited(c, err == nil && isResult(in.Action)); e != nil {
			labels[i] = "rate_limited"
			flush()
			h.reply(c.ctx, c, protocol.NewErrorReply(in.RequestID, e))
			continue
		}
		if err != nil {
			flush()
			if err := h.replyDecodeError(c.ctx, c, in, err); err != nil {
				return err
			}
			continue
		}
		labels[i] = in.Action // a known action: decoding succeeded
		run = append(run, in)
	}
	flush()
	return nil
}

// replyDecodeError answers a frame that failed to decode; only ErrNotJSON is
// passed up, to close the connection.
func (h *Hub) replyDecodeError(ctx context.Context, c *conn, in protocol.Inbound, err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		c.log.Debug().Str("code", string(pe.Code)).Str("field", pe.Field).Msg("bad request")
		h.reply(ctx, c, protocol.NewErrorReply(in.RequestID, pe))
		return nil
	}
	return err
}

// observeFrame records how long one frame took. label is a decoded action or
// "invalid", never raw client text, so clients cannot invent label values.
func (h *Hub) observeFrame(kind Kind, start time.Time, label string) {
	h.metrics.WSDuration.WithLabelValues(string(kind), label).Observe(time.Since(start).Seconds())
}
