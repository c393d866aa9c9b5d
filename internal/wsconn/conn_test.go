package wsconn

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest/kit"
)

// spilling wraps server in a Conn whose onTail counts its calls.
func spilling(server net.Conn) (*Conn, *atomic.Int32) {
	var tails atomic.Int32
	s := NewConn(server, func() { tails.Add(1) })
	return s, &tails
}

// bigTail is more than the kernel may still take once the socket first
// refused a write (Linux grows a send buffer up to net.ipv4.tcp_wmem's
// maximum, 4 MiB, as acknowledgements arrive): a tail that big is still
// there when the test looks.
const bigTail = 6 << 20

// fill fills s, whose peer does not read, until at least minTail bytes
// are left as a tail; want gets what was written.
func fill(t *testing.T, s *Conn, want *bytes.Buffer, minTail int) {
	t.Helper()
	kit.Fill(t, s, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.tail) >= minTail
	}, want)
}

// TestSpillConnNeverBlocksAndKeepsOrder fills a socket whose peer does not
// read (no write may wait), writes more behind the tail, and checks that
// the peer gets every byte, in order, once the tail is flushed.
func TestSpillConnNeverBlocksAndKeepsOrder(t *testing.T) {
	server, client := kit.TCPPair(t)
	s, tails := spilling(server)
	if !s.CanSpill() {
		t.Fatal("a TCP connection with onTail should spill")
	}
	var want bytes.Buffer
	fill(t, s, &want, bigTail)
	if tails.Load() == 0 {
		t.Fatal("a write left a tail and did not call onTail")
	}
	// More writes with a tail waiting go behind it, still without waiting.
	for _, p := range []string{"behind the tail|", "and this|"} {
		if _, err := s.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
		want.WriteString(p)
	}

	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	if err := s.FlushTail(5 * time.Second); err != nil {
		t.Fatalf("FlushTail with a reading peer: %v", err)
	}
	if s.HasTail() {
		t.Fatal("FlushTail left a tail")
	}
	if _, err := s.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("last")
	if err := s.FlushTail(5 * time.Second); err != nil { // "last" may have spilled too
		t.Fatal(err)
	}
	_ = server.(*net.TCPConn).CloseWrite()
	b := <-got
	if !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("peer got %d bytes, want %d (or different bytes)", len(b), want.Len())
	}
}

// TestSpillConnFlushTailGivesUp: a tail to a peer that never reads fails
// after the deadline instead of blocking its writer for good.
func TestSpillConnFlushTailGivesUp(t *testing.T) {
	server, _ := kit.TCPPair(t)
	s, _ := spilling(server)
	var sink bytes.Buffer
	fill(t, s, &sink, bigTail)
	err := s.FlushTail(50 * time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("FlushTail to a peer that does not read: %v, want a timeout", err)
	}
}

// TestSpillConnWithoutFlusher: with no onTail, or no file descriptor
// (net.Pipe), writes block as on the connection underneath, so nothing is
// ever left for a writer that does not exist; send then uses the queue.
func TestSpillConnWithoutFlusher(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p := NewConn(a, func() {})
	if p.CanSpill() {
		t.Fatal("net.Pipe has no descriptor to write nonblocking")
	}
	server, _ := kit.TCPPair(t)
	if NewConn(server, nil).CanSpill() {
		t.Fatal("without onTail no one would write a tail: writes must block")
	}
	var nilSpill *Conn
	if nilSpill.CanSpill() || nilSpill.HasTail() || nilSpill.FlushTail(time.Second) != nil {
		t.Fatal("a connection without a Conn must use the queue")
	}
	done := make(chan error, 1)
	go func() { _, err := p.Write([]byte("blocking")); done <- err }()
	buf := make([]byte, 8)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "blocking" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSpillConnCorkGathersWrites: corked writes reach the socket only at
// uncork, as one write, in order; what the socket cannot take then is a
// tail like any other write's (onTail), flushed whole and in order.
func TestSpillConnCorkGathersWrites(t *testing.T) {
	server, client := kit.TCPPair(t)
	s, tails := spilling(server)
	if !s.Cork() {
		t.Fatal("a spilling connection should cork")
	}
	for _, p := range []string{"first|", "ping|", "second|"} {
		if n, err := s.Write([]byte(p)); err != nil || n != len(p) {
			t.Fatalf("corked write %q: %d, %v", p, n, err)
		}
	}
	if got := string(s.held); got != "first|ping|second|" || s.HasTail() {
		t.Fatalf("corked writes: held %q, tail %v; want every byte held, none written", got, s.HasTail())
	}
	if err := s.Uncork(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("first|ping|second|"))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "first|ping|second|" {
		t.Fatalf("peer read %q, %v", got, err)
	}

	// More than the socket holds, corked: no write is made (so none can
	// wait or leave a tail) until uncork, which leaves the rest as a tail.
	s.Cork()
	var want bytes.Buffer
	chunk := make([]byte, 64<<10)
	for i := range 1024 { // 64 MiB: more than loopback's buffers hold
		for j := range chunk {
			chunk[j] = byte(i * j)
		}
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want.Write(chunk)
	}
	if s.HasTail() || tails.Load() != 0 {
		t.Fatal("a corked write reached the socket")
	}
	if err := s.Uncork(); err != nil {
		t.Fatal(err)
	}
	if !s.HasTail() || tails.Load() != 1 {
		t.Fatalf("uncork of 64 MiB to a peer not reading: tail %v, onTail called %d times; want a tail, reported once", s.HasTail(), tails.Load())
	}
	if _, err := s.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("after")
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		read <- b
	}()
	// The deadline only bounds a hang: 64 MiB under -race on a busy
	// machine may take many seconds.
	if err := s.FlushTail(time.Minute); err != nil {
		t.Fatal(err)
	}
	_ = server.(*net.TCPConn).CloseWrite()
	if b := <-read; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("peer got %d bytes, want %d (or different bytes)", len(b), want.Len())
	}
}
