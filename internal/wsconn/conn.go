// Package wsconn is the socket layer under termhub's WebSockets, the part
// that reaches beneath coder/websocket: Conn, the net.Conn an upgraded
// connection writes through, whose writes never wait for the peer (what a
// full socket cannot take is kept as a tail for the connection's writer to
// flush with a deadline) and can be corked into one system call;
// ResponseWriter, handed to websocket.Accept, which gives the connection
// small buffers of its own and can hold the 101 response back so that it
// leaves with the first frame; and TextFrameBuffered, which tells from the
// read buffer whether a whole text frame can be read without waiting for
// the network. It knows nothing of termhub's messages or connections: the
// hub decides what to write, when to flush and when to close.
package wsconn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is the net.Conn under an upgraded WebSocket. Its writes never
// wait for the peer: each one writes what the socket takes at once and
// keeps the rest as a tail (the socket's kernel buffer is full when the
// peer is not reading), reports everything written, and tells its
// connection (onTail), whose writer goroutine then writes the tail with a
// deadline (FlushTail). A later write tries the tail first and adds to it
// while any is left, so the bytes of every frame reach the socket whole and
// in order, whichever goroutine wrote them: the connection's writer, a
// caller of send, or coder/websocket itself (pings, pongs, the close
// frame). So no goroutine ever blocks on a peer inside coder/websocket's
// frame lock, and a caller of send can never be held by a heartbeat ping
// stuck on a full socket.
//
// Without onTail, or on a connection without a file descriptor, writes
// block as on the net.Conn underneath.
type Conn struct {
	net.Conn
	raw    syscall.RawConn // nil when the connection has no file descriptor
	onTail func()          // called, outside mu, after a write left a tail

	mu       sync.Mutex
	tail     []byte // bytes taken but not yet written; guarded by mu
	corked   bool   // writes are gathered in held until uncork; guarded by mu
	held     []byte // the corked writes; guarded by mu
	pending  atomic.Bool
	blocking atomic.Bool // set once the connection is being closed (BlockWrites)
}

// corkBufs recycles the buffers corked writes are gathered in.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// NewConn wraps nc. onTail is called, outside any lock of the Conn, after
// a write left a tail; the caller then has FlushTail called. With a nil
// onTail, writes block as on nc.
func NewConn(nc net.Conn, onTail func()) *Conn {
	s := &Conn{Conn: nc, onTail: onTail}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
		}
	}
	return s
}

// CanSpill reports whether writes are nonblocking. A nil Conn (a
// connection upgraded without a ResponseWriter) cannot spill.
func (s *Conn) CanSpill() bool { return s != nil && s.raw != nil && s.onTail != nil }

// HasTail reports whether bytes are waiting to be written.
func (s *Conn) HasTail() bool { return s != nil && s.pending.Load() }

// Write writes p: what the socket takes now, keeping the rest (see
// Conn); when writes cannot spill, all of it, blocking.
func (s *Conn) Write(p []byte) (int, error) {
	if !s.CanSpill() {
		return s.Conn.Write(p)
	}
	s.mu.Lock()
	if s.corked {
		s.held = append(s.held, p...)
		s.mu.Unlock()
		return len(p), nil
	}
	return s.writeUnlock(p)
}

// writeUnlock is Write's nonblocking path, entered with mu held; it
// releases mu.
func (s *Conn) writeUnlock(p []byte) (int, error) {
	if s.blocking.Load() {
		defer s.mu.Unlock()
		if err := s.writeTailLocked(); err != nil {
			return 0, err
		}
		return s.Conn.Write(p)
	}
	if len(s.tail) > 0 {
		n, err := s.tryWrite(s.tail)
		if err != nil {
			s.mu.Unlock()
			return 0, err
		}
		s.keepTailLocked(s.tail[n:])
	}
	rest := p
	if len(s.tail) == 0 {
		n, err := s.tryWrite(p)
		if err != nil {
			s.mu.Unlock()
			return n, err
		}
		rest = p[n:]
	}
	if len(rest) > 0 {
		s.keepTailLocked(append(s.tail, rest...)) // a copy: p is the caller's
	}
	left := len(s.tail) > 0
	s.mu.Unlock()
	if left {
		s.onTail()
	}
	return len(p), nil
}

// Cork gathers the writes that follow, every frame's (a ping or pong
// written meanwhile too, in its place), until Uncork writes them as one:
// several frames for one peer cost one system call instead of one each.
// Only the connection's writer should cork, and it uncorks before it gives
// up that role. A connection whose writes cannot spill is not corked
// (false).
func (s *Conn) Cork() bool {
	if !s.CanSpill() {
		return false
	}
	s.mu.Lock()
	s.corked = true
	if s.held == nil {
		s.held = (*corkBufs.Get().(*[]byte))[:0]
	}
	s.mu.Unlock()
	return true
}

// Uncork writes what was gathered since Cork, as Write would have, and
// ends the gathering.
func (s *Conn) Uncork() error {
	s.mu.Lock()
	s.corked = false
	held := s.held
	s.held = nil
	var err error
	if len(held) == 0 {
		s.mu.Unlock()
	} else {
		_, err = s.writeUnlock(held) // copies what the socket does not take
	}
	recycleCorkBuf(held)
	return err
}

// recycleCorkBuf returns a cork buffer to the pool unless it grew too big
// to keep.
func recycleCorkBuf(b []byte) {
	if b != nil && cap(b) <= maxCorkBuf {
		b = b[:0]
		corkBufs.Put(&b)
	}
}

// maxCorkBuf is the largest cork buffer kept for reuse.
const maxCorkBuf = 64 << 10

// BlockWrites makes every later write block, after the tail, as on the
// connection underneath. The writer calls it before it closes the
// connection: no writer would be left to write a tail after coder/websocket
// has written the close frame, which (with the forceDisconnect before it)
// must reach the peer within the close's own timeout.
func (s *Conn) BlockWrites() {
	if s != nil {
		s.blocking.Store(true)
	}
}

// keepTailLocked makes t, which the Conn owns, the tail.
func (s *Conn) keepTailLocked(t []byte) {
	if len(t) == 0 {
		t = nil // let a written tail's array go
	}
	s.tail = t
	s.pending.Store(len(t) > 0)
}

// writeTailLocked writes the tail, blocking.
func (s *Conn) writeTailLocked() error {
	if len(s.tail) == 0 {
		return nil
	}
	n, err := s.Conn.Write(s.tail)
	s.keepTailLocked(s.tail[n:])
	return err
}

// FlushTail writes the tail, blocking, and fails after d (the peer does
// not read; the caller then closes the connection).
func (s *Conn) FlushTail(d time.Duration) error {
	if !s.HasTail() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	err := s.writeTailLocked()
	if derr := s.Conn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
}

// tryWrite makes one nonblocking write of p and returns how much the
// socket took; a full socket is 0 bytes and no error.
func (s *Conn) tryWrite(p []byte) (int, error) {
	var (
		n    int
		werr error
	)
	err := s.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), p)
			if !errors.Is(werr, syscall.EINTR) {
				return true
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if n < 0 {
		n = 0
	}
	if errors.Is(werr, syscall.EAGAIN) {
		werr = nil
	}
	return n, werr
}
