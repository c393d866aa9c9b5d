package hub

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// spillConn is the net.Conn under an upgraded WebSocket. It lets the
// caller of send write a frame itself without ever blocking on the peer:
// while nonblocking is set, a write that the socket cannot take at once
// (its kernel buffer is full: the peer is not reading) keeps the rest of
// its bytes as a tail and reports them written; the connection's writer
// goroutine then writes the tail, blocking as any writer does. Every other
// write first writes the tail, so the bytes of every frame reach the socket
// whole and in order, whichever goroutine wrote them.
type spillConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection has no file descriptor: never nonblocking

	mu          sync.Mutex
	nonblocking bool   // guarded by mu
	tail        []byte // bytes taken but not yet written; guarded by mu
	pending     atomic.Bool
}

// newSpillConn wraps nc.
func newSpillConn(nc net.Conn) *spillConn {
	s := &spillConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
		}
	}
	return s
}

// canSpill reports whether writes can be made nonblocking.
func (s *spillConn) canSpill() bool { return s != nil && s.raw != nil }

// setNonblocking switches the nonblocking mode of the writes that follow.
func (s *spillConn) setNonblocking(on bool) {
	s.mu.Lock()
	s.nonblocking = on
	s.mu.Unlock()
}

// hasTail reports whether bytes are waiting to be written.
func (s *spillConn) hasTail() bool { return s != nil && s.pending.Load() }

// Write writes p: in nonblocking mode what the socket takes now, keeping
// the rest; otherwise all of it, after the tail.
func (s *spillConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.nonblocking {
		if err := s.writeTailLocked(); err != nil {
			return 0, err
		}
		return s.Conn.Write(p)
	}
	if len(s.tail) > 0 {
		n, err := s.tryWrite(s.tail)
		if err != nil {
			return 0, err
		}
		s.keepTailLocked(s.tail[n:])
	}
	rest := p
	if len(s.tail) == 0 {
		n, err := s.tryWrite(p)
		if err != nil {
			return n, err
		}
		rest = p[n:]
	}
	if len(rest) > 0 {
		s.keepTailLocked(append(s.tail, rest...))
	}
	return len(p), nil
}

// keepTailLocked makes t the tail (copied when it is not the tail already).
func (s *spillConn) keepTailLocked(t []byte) {
	if len(t) == 0 {
		s.tail = nil
	} else {
		s.tail = append([]byte(nil), t...)
	}
	s.pending.Store(len(s.tail) > 0)
}

// flushTail writes the tail, failing after d (the peer does not read).
func (s *spillConn) flushTail(d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tail) == 0 {
		return nil
	}
	if err := s.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	err := s.writeTailLocked()
	if derr := s.Conn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
}

// writeTailLocked writes the whole tail, blocking.
func (s *spillConn) writeTailLocked() error {
	if len(s.tail) == 0 {
		return nil
	}
	n, err := s.Conn.Write(s.tail)
	s.keepTailLocked(s.tail[n:])
	return err
}

// tryWrite makes one nonblocking write of p and returns how much the
// socket took; a full socket is 0 bytes and no error.
func (s *spillConn) tryWrite(p []byte) (int, error) {
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
