package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/internal/wsconn"
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

// conn is one live WebSocket. Its reader runs in a goroutine of its own
// (serveConn returns from the HTTP handler once the connection is
// registered); its writer runs only while there is something to write
// (writer.go) and disconnects a peer that does not keep up rather than let
// it block the hub (durable data lives in Redis, so kicking it loses
// nothing).
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
	// ioCtx is ctx without its cancellation, for the socket's reads and
	// direct writes: coder/websocket ties a context that can end to the
	// connection (context.AfterFunc) on every read and write, a cost per
	// frame. The end of ctx closes the socket instead, once (closeOnEnd),
	// which ends a read as surely; a direct write never waits (wsconn).
	ioCtx context.Context
	// refusedInARow counts frames refused by the rate limit since the last
	// one let through; touched by the reader only (Hub.frameLimited).
	refusedInARow int
	// peerGone: the read ended because the peer's side of the socket
	// closed or reset, with no close frame.
	peerGone atomic.Bool

	// The write queue (writer.go). Its slice and channels are made on first
	// use and let go when drained: an idle connection holds none.
	wmu     sync.Mutex
	greeted bool                 // the greeting is queued, so replayed frames may follow; guarded by wmu
	writing bool                 // a writer goroutine is running; guarded by wmu
	ended   bool                 // writing is over for good; guarded by wmu
	live    int32                // live frames in out, at most queueSize; guarded by wmu
	replays int32                // replayed frames in out, at most replayQueue; guarded by wmu
	out     []outFrame           // frames to write, oldest first; guarded by wmu
	kick    *protocol.Disconnect // the first disconnect, taken by the writer; guarded by wmu
	room    chan struct{}        // closed to wake the replays waiting in queueReplay; guarded by wmu
	done    chan struct{}        // made by waitWritten, closed when writing has ended; guarded by wmu
	// While a terminal's open commands are read (terminalUp), the live
	// commands sent to it are kept, so that a command both sent live and
	// found open is sent once. Guarded by wmu.
	resuming bool
	sentLive [][]byte
	// epoch is the device's shared record's epoch once this terminal
	// connection holds it (hub/shared.go); 0 before, and on a lone hub.
	// Read and written under the device's lock.
	epoch int64
	// dropRecorded: the end of this terminal connection is in the shared
	// record (or needs not be). Under the device's lock.
	dropRecorded bool

	spill *wsconn.Conn // the socket, set by the upgrade; nil in tests that upgrade otherwise

	// The WebSocket's read buffer, set by the upgrade (nil in tests that
	// upgrade otherwise): a terminal's reader looks in it for frames that
	// arrived together, to serve them together (readLoop). rbufMu keeps the
	// look apart from the close handshake, which reads the buffer from
	// finish's goroutine.
	rbufMu sync.Mutex
	rbuf   *bufio.Reader

	dlv *posDelivery // POS only (nil for a terminal): outbox replay and live delivery

	kicked atomic.Bool // a disconnect was taken: frames that still arrive are dropped
	alive  atomic.Bool // a pong or a frame arrived since the last heartbeat tick
	// busy: the reader is serving frames, and reads nothing (pongs
	// included) until it is done. A peer whose frames are being served is
	// alive, however long Redis makes the serving take.
	busy  atomic.Bool
	leave func() // unregisters once; set by serveConn

	missed   int          // heartbeats missed in a row; touched only by the heartbeat timer
	lastSeen atomic.Int64 // unix nanoseconds of the last pong or frame, by the hub clock
	hbMu     sync.Mutex
	closed   bool        // guarded by hbMu
	hbTimer  clock.Timer // guarded by hbMu
}

func (h *Hub) newConn(ws *websocket.Conn, kind Kind, merchantID, keyID, deviceID string) *conn {
	ctx, cancel := context.WithCancel(h.baseCtx)
	c := &conn{
		h: h, ws: ws, id: newConnectionID(), kind: kind,
		merchantID: merchantID, keyID: keyID, deviceID: deviceID,
		connected: h.now(),
		ctx:       ctx, cancel: cancel, ioCtx: context.WithoutCancel(ctx),
	}
	lc := h.log.With().Str("connectionId", c.id).Str("kind", string(kind)).Str("merchantId", merchantID)
	if keyID != "" {
		lc = lc.Str("apiKeyId", keyID)
	}
	if deviceID != "" {
		lc = lc.Str("deviceId", deviceID)
	}
	c.log = lc.Logger()
	if kind == KindPOS {
		c.dlv = &posDelivery{}
	}
	if ws != nil {
		c.closeOnEnd()
	}
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

// protect runs f and recovers a panic in it the way net/http recovers a
// panicking handler, which the reader ran in before it got a goroutine of
// its own: the panic is logged with its stack and the socket closed (the
// connection cannot be served on), and the process goes on.
func (c *conn) protect(f func()) {
	defer func() {
		if v := recover(); v != nil {
			c.log.Error().Interface("panic", v).Bytes("stack", debug.Stack()).Msg("panic serving a connection")
			_ = c.ws.CloseNow()
		}
	}()
	f()
}

// closeOnEnd closes the socket once the connection's context ends, which
// ends a read on ioCtx as the context's own end would (coder/websocket
// closes the connection then too).
func (c *conn) closeOnEnd() {
	ws := c.ws
	context.AfterFunc(c.ctx, func() { _ = ws.CloseNow() })
}

// write sends one frame within the write timeout.
func (c *conn) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.h.opts.WriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, frame); err != nil {
		return err
	}
	// The socket's writes do not wait (wsconn.Conn): what it could not
	// take yet is written now, within the write timeout.
	return c.spill.FlushTail(c.h.opts.WriteTimeout)
}

// finish sends the forceDisconnect of d and closes the socket with its code.
func (c *conn) finish(d *protocol.Disconnect) {
	c.log.Info().Str("reason", d.Reason).Int("code", int(d.Code)).Bool("reconnectAllowed", d.ReconnectAllowed).Msg("disconnecting")
	c.spill.BlockWrites()
	if c.peerGone.Load() && d.Reason == "" {
		// The peer ended the connection without a close frame and the hub
		// owes it nothing (no reason of its own to close): no close frame
		// and no wait for an answer that a vanished peer never sends, which
		// a reconnect storm would pay for every connection
		// (docs/performance.md). A disconnect with a reason (shutdown,
		// displaced, kicked) still sends its forceDisconnect and close
		// frame: a peer that only closed its sending side can read them.
		_ = c.ws.CloseNow()
		return
	}
	if d.Reason != "" {
		if b, err := json.Marshal(d.Frame()); err == nil {
			_ = c.write(b)
		}
	}
	// Close waits for the peer's close frame for up to 5 s; do it holding
	// nothing but rbufMu (Close reads the read buffer), which the reader
	// takes only between frames, so a dead peer costs only this goroutine.
	c.rbufMu.Lock()
	defer c.rbufMu.Unlock()
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

// maxBatch is the most frames a terminal's reader serves together.
const maxBatch = 8

// readLoop reads frames and hands them to handle until the connection ends:
// one at a time, except that a terminal's frames that arrived together
// (every complete text frame already in the read buffer behind the one
// read, up to maxBatch) are handed over together, so that they can be
// committed together. Frames over 64 KiB and non-text or non-JSON frames
// close the connection with 4400; handle reports the latter by returning
// protocol.ErrNotJSON.
func (c *conn) readLoop(handle func(frames [][]byte) error) {
	var (
		batch [][]byte
		bufs  []*[]byte // the pooled buffers batch's frames were read into
	)
	read := func() ([]byte, bool) {
		data, buf, ok := c.readFrame()
		if buf != nil {
			bufs = append(bufs, buf)
		}
		return data, ok
	}
	done := func() { // the frames are garbage once served
		clear(batch)
		for _, b := range bufs {
			if cap(*b) <= maxPooledFrame {
				frameBufs.Put(b)
			}
		}
		bufs = bufs[:0]
	}
	defer done()
	for {
		data, ok := read()
		if !ok {
			return
		}
		if c.kicked.Load() {
			done()
			continue // on its way out: nothing more is acted on
		}
		batch = append(batch[:0], data)
		ended := false
		for c.kind == KindTerminal && len(batch) < maxBatch && c.frameBuffered() {
			data, ok := read()
			if !ok {
				ended = true // the frames before it are still served
				break
			}
			batch = append(batch, data)
		}
		c.busy.Store(true)
		err := handle(batch)
		c.busy.Store(false)
		c.alive.Store(true) // its pongs waited behind the frames: read next
		switch {
		case ended: // the connection is closing (kicked, shut down) while the batch was gathered
			return
		case errors.Is(err, protocol.ErrNotJSON):
			c.protocolViolation("frame is not JSON")
			return
		}
		done()
	}
}

// frameBufs recycles the buffers frames are read into: the handlers decode
// a frame into values of their own (encoding/json and protocol's envelope
// scan copy what they keep), so nothing refers to a frame's bytes once it
// has been served.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledFrame is the largest read buffer kept for reuse: one 64 KiB
// frame should not pin 64 KiB in the pool.
const maxPooledFrame = 16 << 10

// readFrame reads one frame's payload into a buffer from frameBufs, which
// it returns too (for the caller to give back once the frame is served; nil
// when no frame came); false when the connection ended or the frame broke
// the rules (the connection is then closing). The buffer is taken only once
// a frame has arrived, so that an idle connection, parked in ws.Reader,
// holds none.
func (c *conn) readFrame() ([]byte, *[]byte, bool) {
	typ, r, err := c.ws.Reader(c.ioCtx)
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Debug().Err(err).Msg("read ended")
		}
		c.notePeerGone(err)
		return nil, nil, false
	}
	buf := frameBufs.Get().(*[]byte)
	data, err := readAll(r, (*buf)[:0], protocol.MaxFrameBytes+1)
	*buf = data
	if err != nil {
		c.notePeerGone(err)
		return nil, buf, false
	}
	c.touch()
	switch {
	case len(data) > protocol.MaxFrameBytes:
		c.protocolViolation("frame exceeds 64 KiB")
		return nil, buf, false
	case typ != websocket.MessageText:
		c.protocolViolation("binary frames are not accepted")
		return nil, buf, false
	}
	return data, buf, true
}

// notePeerGone records a read error that means the peer's side of the
// socket is closed: end of stream or a reset, with no close frame.
func (c *conn) notePeerGone(err error) {
	if websocket.CloseStatus(err) == -1 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
		c.peerGone.Store(true)
	}
}

// readAll is io.ReadAll(io.LimitReader(r, limit)) appending to b: it reads
// until EOF or until it has limit bytes.
func readAll(r io.Reader, b []byte, limit int) ([]byte, error) {
	for len(b) < limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append pick the growth
		}
		n, err := r.Read(b[len(b):min(cap(b), limit)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// frameBuffered reports whether the read buffer holds a whole unfragmented
// text frame of at most 64 KiB (wsconn.TextFrameBuffered).
func (c *conn) frameBuffered() bool {
	c.rbufMu.Lock()
	defer c.rbufMu.Unlock()
	return wsconn.TextFrameBuffered(c.rbuf, protocol.MaxFrameBytes)
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
	if c.alive.Swap(false) || c.busy.Load() {
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

// queueSize is how many live frames a connection may have queued before it
// counts as slow. A terminal is sent a command or two at a time (re-sends
// after a reconnect are replayed frames, which wait instead), so its limit
// is small.
func queueSize(o Options, kind Kind) int {
	if kind == KindTerminal {
		return o.TerminalQueue
	}
	return o.SendQueue
}
