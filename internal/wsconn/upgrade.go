package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
)

// ReadBufferSize is the read buffer of an upgraded connection. Buffers are
// much of an idle connection's memory, so it is as small as the traffic
// allows: reads are frame headers and small JSON frames (a read of a larger
// payload goes around the buffer).
const ReadBufferSize = 1 << 10

// ResponseWriter is the http.ResponseWriter to hand websocket.Accept. It
// passes everything through except WriteHeader(101) (see HoldSwitch) and
// Hijack, which gives the WebSocket small buffers of its own:
// coder/websocket keeps the buffers Hijack returns for the connection's
// whole life, and net/http's are 4 KiB each (its connection's read buffer
// and the writer it reuses), 8 KiB of an idle connection that needs 2 or
// 3. Writes go through a Conn; after websocket.Accept returns, Conn and
// Reader hold what Hijack made.
type ResponseWriter struct {
	http.ResponseWriter
	// WriteBuffer is the size of the new writer's buffer: one typical frame
	// with its header, so that the frame goes out in one write.
	WriteBuffer int
	// HoldSwitch holds back the 101 response: WriteHeader(101) records it
	// and Hijack puts it in the new writer, unflushed, so that it leaves in
	// the same write as the first frame (the greeting) instead of in a
	// write of its own, which would wake the peer twice.
	HoldSwitch bool
	// OnTail is the Conn's onTail (see NewConn); nil: writes block.
	OnTail func()

	// Conn is the connection writes go through, set by Hijack.
	Conn *Conn
	// Reader is the connection's read buffer, set by Hijack:
	// coder/websocket keeps it, and TextFrameBuffered looks into it.
	Reader *bufio.Reader

	switched bool // a 101 was held back
}

// WriteHeader holds back a 101 when HoldSwitch is set and passes anything
// else on.
func (w *ResponseWriter) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols && w.HoldSwitch {
		w.switched = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// newWriter returns the connection's buffered writer over sc, holding the
// 101 response if it was held back.
func (w *ResponseWriter) newWriter(sc io.Writer) *bufio.Writer {
	bw := bufio.NewWriterSize(sc, w.WriteBuffer)
	if w.switched {
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
		_ = w.Header().Write(bw) // a bufio.Writer's errors wait for its Flush
		bw.WriteString("\r\n")
	}
	return bw
}

// Unwrap lets http.ResponseController and coder/websocket reach the writer
// underneath.
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes over the connection through the writer underneath (found by
// http.ResponseController, so wrapped writers work too) and returns a fresh,
// small bufio.ReadWriter over it. Bytes the client sent right behind its
// upgrade request and net/http already read are moved into the new reader,
// so nothing is lost. net/http's writer is empty (the 101 is held back, or
// without HoldSwitch net/http flushed it in Hijack) and can be dropped; a
// wrapper's writer that still holds something is flushed first.
func (w *ResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
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
	// Writes go through a Conn, which never waits for the peer once the
	// connection takes its tails; reads go straight to nc.
	sc := NewConn(nc, w.OnTail)
	w.Conn = sc
	n := brw.Reader.Buffered()
	if n == 0 {
		w.Reader = bufio.NewReaderSize(nc, ReadBufferSize)
		return sc, bufio.NewReadWriter(w.Reader, w.newWriter(sc)), nil
	}
	early, _ := brw.Reader.Peek(n) // cannot fail: n bytes are buffered
	early = bytes.Clone(early)     // a copy, so that net/http's 4 KiB buffer can go
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), nc), max(ReadBufferSize, n))
	// Load the early bytes into br's buffer (one read of the bytes.Reader,
	// so it never waits for the network): coder/websocket takes what
	// Buffered reports and then resets the reader onto the net.Conn, as it
	// does with net/http's reader.
	if _, err := br.Peek(n); err != nil {
		_ = nc.Close()
		return nil, nil, err
	}
	w.Reader = br
	return sc, bufio.NewReadWriter(br, w.newWriter(sc)), nil
}

// TextFrameBuffered reports whether br's buffer starts with a whole
// unfragmented text frame of at most maxPayload bytes, which can be read
// without waiting for the network (RFC 6455 §5.2). Anything else, a control
// frame included, is left to the next read: a partial frame would make the
// frames before it wait, and control frames are coder/websocket's to
// handle. The caller keeps br from being read meanwhile.
func TextFrameBuffered(br *bufio.Reader, maxPayload uint64) bool {
	if br == nil {
		return false
	}
	p, _ := br.Peek(br.Buffered()) // cannot fail: only what is buffered
	return wholeTextFrame(p, maxPayload)
}

// wholeTextFrame reports whether p starts with a whole unfragmented text
// frame of at most maxPayload bytes.
func wholeTextFrame(p []byte, maxPayload uint64) bool {
	if len(p) < 2 || p[0] != 0x81 { // FIN, no RSV bits, opcode 1 (text)
		return false
	}
	size, head := uint64(p[1]&0x7f), 2
	switch size {
	case 126:
		if len(p) < 4 {
			return false
		}
		size, head = uint64(binary.BigEndian.Uint16(p[2:4])), 4
	case 127:
		if len(p) < 10 {
			return false
		}
		size, head = binary.BigEndian.Uint64(p[2:10]), 10
	}
	if p[1]&0x80 != 0 {
		head += 4 // the mask key
	}
	return size <= maxPayload && len(p) >= head && uint64(len(p)-head) >= size
}
