package hub

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/protocol"
)

// Kind tells POS, terminal and ops connections apart.
type Kind string

// Connection kinds.
const (
	KindPOS      Kind = "pos"
	KindTerminal Kind = "terminal"
	KindOps      Kind = "ops"
)

// conn is one live WebSocket. Its reader runs in the HTTP handler's
// goroutine; its writer drains a bounded queue so that a slow peer never
// blocks the hub: when the queue is full the peer is disconnected (durable
// data lives in Redis, so kicking it loses nothing).
type conn struct {
	h          *Hub
	ws         *websocket.Conn
	id         string
	kind       Kind
	merchantID string
	keyID      string // POS only
	deviceID   string // terminal only
	log        zerolog.Logger
	connected  time.Time

	ctx    context.Context
	cancel context.CancelFunc
	send   chan []byte
	replay chan []byte               // unbuffered: replay waits for the writer and never fills send
	kick   chan *protocol.Disconnect // capacity 1; the first kick wins
	done   chan struct{}             // closed when the writer has finished

	dlv posDelivery // POS only: outbox replay and live delivery

	kicked atomic.Bool // a disconnect was taken: frames that still arrive are dropped
	leave  func()      // unregisters once; set by serveConn

	alive    atomic.Bool  // a pong or a frame arrived since the last heartbeat tick
	missed   int          // heartbeats missed in a row; touched only by the heartbeat timer
	lastSeen atomic.Int64 // unix nanoseconds of the last pong or frame, by the hub clock
	hbMu     sync.Mutex
	hbTimer  clock.Timer // guarded by hbMu
	closed   bool        // guarded by hbMu
}

func (h *Hub) newConn(ws *websocket.Conn, kind Kind, merchantID, keyID, deviceID string) *conn {
	ctx, cancel := context.WithCancel(h.baseCtx)
	c := &conn{
		h: h, ws: ws, id: newConnectionID(), kind: kind,
		merchantID: merchantID, keyID: keyID, deviceID: deviceID,
		connected: h.now(),
		ctx:       ctx, cancel: cancel,
		send: make(chan []byte, queueSize(h.opts, kind)), replay: make(chan []byte),
		kick: make(chan *protocol.Disconnect, 1),
		done: make(chan struct{}),
	}
	lc := h.log.With().Str("connectionId", c.id).Str("kind", string(kind)).Str("merchantId", merchantID)
	if keyID != "" {
		lc = lc.Str("apiKeyId", keyID)
	}
	if deviceID != "" {
		lc = lc.Str("deviceId", deviceID)
	}
	c.log = lc.Logger()
	c.touch()
	return c
}

// touch records that the peer showed signs of life.
func (c *conn) touch() {
	c.alive.Store(true)
	c.lastSeen.Store(c.h.now().UnixNano())
}

// lastSeenAt is when the peer last showed signs of life.
func (c *conn) lastSeenAt() time.Time { return time.Unix(0, c.lastSeen.Load()).UTC() }

// enqueue queues a frame for the writer. A full queue means the peer does not
// keep up; it is disconnected rather than allowed to hold the hub back.
func (c *conn) enqueue(frame []byte) {
	select {
	case <-c.ctx.Done():
	case c.send <- frame:
	default:
		c.log.Warn().Int("queue", cap(c.send)).Msg("send queue full: disconnecting slow peer")
		c.disconnect(&protocol.Disconnect{Code: protocol.ClosePolicy, Reason: protocol.ReasonOther,
			Message: "Connection too slow to receive messages", ReconnectAllowed: true})
	}
}

// sendJSON marshals v and queues it.
func (c *conn) sendJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.log.Error().Err(err).Msg("marshal outgoing message")
		return
	}
	c.enqueue(b)
}

// disconnect ends the connection: the writer sends d's forceDisconnect
// (when d has a reason) and closes with d's code. Later calls are ignored.
func (c *conn) disconnect(d *protocol.Disconnect) {
	select {
	case c.kick <- d:
	default:
	}
}

// writeLoop sends queued frames until the connection ends or is kicked.
func (c *conn) writeLoop() {
	defer close(c.done)
	defer c.cancel()
	// The greeting is always the first frame queued on send (register
	// queues it). Replayed frames and re-sent commands are taken only once it
	// is out, so nothing can overtake it.
	var replay <-chan []byte
	for {
		var frame []byte
		select {
		case <-c.ctx.Done():
			return
		case d := <-c.kick:
			c.kicked.Store(true)
			if c.leave != nil {
				c.leave()
			}
			c.finish(d)
			return
		case frame = <-replay:
		case frame = <-c.send:
			replay = c.replay
		}
		if err := c.write(frame); err != nil {
			c.log.Debug().Err(err).Msg("write failed")
			_ = c.ws.CloseNow()
			return
		}
	}
}

func (c *conn) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.h.opts.WriteTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

// finish sends the forceDisconnect of d and closes the socket with its code.
func (c *conn) finish(d *protocol.Disconnect) {
	c.log.Info().Str("reason", d.Reason).Int("code", int(d.Code)).Bool("reconnectAllowed", d.ReconnectAllowed).Msg("disconnecting")
	if d.Reason != "" {
		if b, err := json.Marshal(d.Frame()); err == nil {
			_ = c.write(b)
		}
	}
	// Close waits for the peer's close frame for up to 5 s; do it without
	// holding anything so that a dead peer costs only this goroutine.
	_ = c.ws.Close(websocket.StatusCode(d.Code), closeText(d))
}

func closeText(d *protocol.Disconnect) string {
	t := d.Reason
	if t == "" {
		t = d.Message
	}
	if len(t) > 120 {
		t = t[:120]
	}
	return t
}

// readLoop reads frames and hands each to handle until the connection ends.
// Frames over 64 KiB and non-text or non-JSON frames close the connection with
// 4400; handle reports the latter by returning protocol.ErrNotJSON.
func (c *conn) readLoop(handle func(data []byte) error) {
	for {
		typ, r, err := c.ws.Reader(c.ctx)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				c.log.Debug().Err(err).Msg("read ended")
			}
			return
		}
		data, err := io.ReadAll(io.LimitReader(r, protocol.MaxFrameBytes+1))
		if err != nil {
			return
		}
		c.touch()
		switch {
		case len(data) > protocol.MaxFrameBytes:
			c.protocolViolation("frame exceeds 64 KiB")
			return
		case typ != websocket.MessageText:
			c.protocolViolation("binary frames are not accepted")
			return
		}
		if c.kicked.Load() {
			continue // on its way out: nothing more is acted on
		}
		if err := handle(data); errors.Is(err, protocol.ErrNotJSON) {
			c.protocolViolation("frame is not JSON")
			return
		}
	}
}

func (c *conn) protocolViolation(why string) {
	c.log.Warn().Str("problem", why).Msg("protocol violation")
	c.disconnect(&protocol.Disconnect{Code: protocol.CloseProtocolError, Message: why})
}

// startHeartbeat pings the peer every interval. A tick with no pong and no
// frame since the previous one is a miss; two misses in a row make the
// connection stale (4002).
func (c *conn) startHeartbeat() {
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	if !c.closed {
		c.hbTimer = c.h.clock.AfterFunc(c.h.opts.HeartbeatInterval, c.heartbeat)
	}
}

func (c *conn) heartbeat() {
	if c.alive.Swap(false) {
		c.missed = 0
	} else {
		c.missed++
	}
	if c.missed >= 2 {
		c.disconnect(&protocol.Disconnect{Code: protocol.CloseStale, Reason: protocol.ReasonStale,
			Message: "No heartbeat answered within two intervals", ReconnectAllowed: true})
		return
	}
	go func() {
		// Ping waits for the pong; OnPongReceived records it. The goroutine
		// ends with the pong or with the connection.
		_ = c.ws.Ping(c.ctx)
	}()
	c.startHeartbeat()
}

func (c *conn) stopHeartbeat() {
	c.hbMu.Lock()
	defer c.hbMu.Unlock()
	c.closed = true
	if c.hbTimer != nil {
		c.hbTimer.Stop()
	}
}

// queueSize is a connection's send queue. A terminal is sent a command or
// two at a time (re-sends after a reconnect go through the replay channel),
// so its queue is small: it is most of an idle connection's memory.
func queueSize(o Options, kind Kind) int {
	if kind == KindTerminal {
		return o.TerminalQueue
	}
	return o.SendQueue
}
