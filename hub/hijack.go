package hub

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// Buffer sizes of an upgraded connection. Buffers are much of an idle
// connection's memory, so they are as small as the traffic allows. Reads are
// frame headers and small JSON frames (a read of a larger payload goes
// around the buffer). A writer holds one typical frame with its header, so
// that the frame goes out in one write (a bigger one takes two): a POS is
// sent replies and events of often ~1.5 KB, a terminal commands of a few
// hundred bytes.
const (
	wsReadBuffer          = 1 << 10
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

// hijackWriter is the http.ResponseWriter handed to websocket.Accept. It
// passes everything through except WriteHeader(101) (see switching) and
// Hijack, which gives the WebSocket small
// buffers of its own: coder/websocket keeps the buffers Hijack returns for
// the connection's whole life, and net/http's are 4 KiB each (its
// connection's read buffer and the writer it reuses), 8 KiB of an idle
// connection that needs 2 or 3.
type hijackWriter struct {
	http.ResponseWriter
	writeBuffer int   // size of the new writer's buffer
	conn        *conn // given the spillConn the socket is wrapped in, when set
	// switching, when set, holds back the 101 response: WriteHeader(101)
	// records it and Hijack puts it in the new writer, unflushed, so that
	// it leaves in the same write as the first frame (the greeting). net/http
	// would flush it on its own, one more write per connection: 13% of the
	// hub's CPU in a reconnect storm, with the peer woken twice.
	switching *bool
}

// WriteHeader holds back a 101 when switching is set (see there) and passes
// anything else on.
func (w hijackWriter) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols && w.switching != nil {
		*w.switching = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// newWriter returns the connection's buffered writer over sc, holding the
// 101 response if it was held back.
func (w hijackWriter) newWriter(sc io.Writer) *bufio.Writer {
	bw := bufio.NewWriterSize(sc, w.writeBuffer)
	if w.switching != nil && *w.switching {
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
		_ = w.Header().Write(bw) // a bufio.Writer's errors wait for its Flush
		bw.WriteString("\r\n")
	}
	return bw
}

// Unwrap lets http.ResponseController and coder/websocket reach the writer
// underneath.
func (w hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes over the connection through the writer underneath (found by
// http.ResponseController, so wrapped writers work too) and returns a fresh,
// small bufio.ReadWriter over it. Bytes the client sent right behind its
// upgrade request and net/http already read are moved into the new reader,
// so nothing is lost. net/http's writer is empty (the 101 is held back, or
// without switching net/http flushed it in Hijack) and can be dropped; a
// wrapper's writer that still holds something is flushed first.
func (w hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Writer.Buffered() > 0 {
		if err := brw.Writer.Flush(); err != nil {
			_ = nc.Close()
			return nil, nil, err
		}
	}
	// Writes go through a spillConn, which never waits for the peer once
	// the connection takes its tails (spill.go); reads go straight to nc.
	sc := newSpillConn(nc)
	if w.conn != nil {
		sc.onTail = w.conn.tailed
		w.conn.spill = sc
	}
	n := brw.Reader.Buffered()
	if n == 0 {
		br := bufio.NewReaderSize(nc, wsReadBuffer)
		w.setReadBuffer(br)
		return sc, bufio.NewReadWriter(br, w.newWriter(sc)), nil
	}
	early, _ := brw.Reader.Peek(n) // cannot fail: n bytes are buffered
	early = bytes.Clone(early)     // a copy, so that net/http's 4 KiB buffer can go
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), nc), max(wsReadBuffer, n))
	// Load the early bytes into br's buffer (one read of the bytes.Reader,
	// so it never waits for the network): coder/websocket takes what
	// Buffered reports and then resets the reader onto the net.Conn, as it
	// does with net/http's reader.
	if _, err := br.Peek(n); err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	w.setReadBuffer(br)
	return sc, bufio.NewReadWriter(br, w.newWriter(sc)), nil
}

// setReadBuffer tells the connection which buffer its frames are read
// through (coder/websocket keeps the one Hijack returns).
func (w hijackWriter) setReadBuffer(br *bufio.Reader) {
	if w.conn != nil {
		w.conn.rbuf = br
	}
}
