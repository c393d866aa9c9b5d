package hub

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/wsconn"
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

// fill writes 64 KiB chunks to s, whose peer does not read, until one is
// left as a tail; it returns what it wrote. None of the writes may wait
// (were one to, the test would hang: nothing reads yet).
func fill(t *testing.T, s *wsconn.Conn, want *bytes.Buffer) {
	t.Helper()
	chunk := make([]byte, 64<<10)
	for i := 0; !s.HasTail(); i++ {
		if i == 4096 { // 256 MiB: far more than loopback's buffers hold
			t.Fatal("the socket never filled")
		}
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		n, err := s.Write(chunk)
		if err != nil || n != len(chunk) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		want.Write(chunk)
	}
}

// TestTailWithoutWriterIsFlushed: bytes left by a write from outside the
// writer (coder/websocket's pings and pongs write from the heartbeat and
// the reader) start a writer, which writes them and ends.
func TestTailWithoutWriterIsFlushed(t *testing.T) {
	h := New(Options{Logger: zerolog.Nop()})
	t.Cleanup(h.stop)
	c := h.newConn(nil, KindTerminal, "m1", "", "T1")
	server, client := tcpPair(t)
	c.spill = wsconn.NewConn(server, c.tailed)
	var want bytes.Buffer
	fill(t, c.spill, &want)
	// Nothing else writes here: the peer gets the tail only if onTail
	// started a writer. (Waiting to see c.writing set would race with a
	// writer that already finished: the kernel may take a small tail at
	// once as its send buffer grows.) The deadline turns a tail nobody
	// writes into a failure rather than a hang.
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer read %v; got the bytes in order: %v", err, bytes.Equal(got, want.Bytes()))
	}
	within(t, "the writer to end once the tail is written", func() bool {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return !c.writing && !c.spill.HasTail()
	})
}
