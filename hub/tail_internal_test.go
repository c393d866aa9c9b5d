package hub

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/wsconn"
)

// TestTailWithoutWriterIsFlushed: bytes left by a write from outside the
// writer (coder/websocket's pings and pongs write from the heartbeat and
// the reader) start a writer, which writes them and ends.
func TestTailWithoutWriterIsFlushed(t *testing.T) {
	h := New(Options{Logger: zerolog.Nop()})
	t.Cleanup(h.stop)
	c := h.newConn(nil, KindTerminal, "m1", "", "T1")
	server, client := kit.TCPPair(t)
	c.spill = wsconn.NewConn(server, c.tailed)
	var want bytes.Buffer
	kit.Fill(t, c.spill, c.spill.HasTail, &want)
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
