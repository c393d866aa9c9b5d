package hub

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// TestSpillConnNeverBlocksAndKeepsOrder fills a socket whose peer does not
// read with nonblocking writes (none may wait), then writes once more
// blocking, and checks that the peer gets every byte, in order, once the
// tail is flushed.
func TestSpillConnNeverBlocksAndKeepsOrder(t *testing.T) {
	server, client := tcpPair(t)
	s := newSpillConn(server)
	if !s.canSpill() {
		t.Fatal("a TCP connection should allow nonblocking writes")
	}
	var want bytes.Buffer
	chunk := make([]byte, 64<<10)
	s.setNonblocking(true)
	for i := 0; !s.hasTail(); i++ {
		if i == 4096 { // 256 MiB: far more than loopback's buffers hold
			t.Fatal("the socket never filled")
		}
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		// A nonblocking Write that waited for the reader would hang here:
		// nothing reads yet.
		n, err := s.Write(chunk)
		if err != nil || n != len(chunk) {
			t.Fatalf("nonblocking write %d: %d, %v", i, n, err)
		}
		want.Write(chunk)
	}
	// One more nonblocking write with a tail waiting goes behind it.
	if _, err := s.Write([]byte("behind the tail|")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("behind the tail|")
	s.setNonblocking(false)

	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	// A blocking write writes the tail first.
	if _, err := s.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	want.WriteString("last")
	if s.hasTail() {
		t.Fatal("a blocking write left a tail")
	}
	if err := s.flushTail(time.Second); err != nil {
		t.Fatalf("flushing no tail: %v", err)
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
	server, _ := tcpPair(t)
	s := newSpillConn(server)
	s.setNonblocking(true)
	chunk := make([]byte, 64<<10)
	for i := 0; !s.hasTail(); i++ {
		if i == 4096 {
			t.Fatal("the socket never filled")
		}
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	s.setNonblocking(false)
	err := s.flushTail(50 * time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("flushTail to a peer that does not read: %v, want a timeout", err)
	}
}

// TestSpillConnWithoutDescriptor: a connection with no file descriptor
// (net.Pipe) is never written nonblocking, so send falls back to the queue.
func TestSpillConnWithoutDescriptor(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if newSpillConn(a).canSpill() {
		t.Fatal("net.Pipe has no descriptor to write nonblocking")
	}
	var nilSpill *spillConn
	if nilSpill.canSpill() || nilSpill.hasTail() {
		t.Fatal("a connection without a spillConn must use the queue")
	}
}
