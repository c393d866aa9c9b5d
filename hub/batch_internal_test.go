package hub

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/termhub/termhub/protocol"
)

// frame is a masked client frame: first byte b0, a payload of n bytes.
func frame(b0 byte, n int) []byte {
	var h []byte
	switch {
	case n < 126:
		h = []byte{b0, 0x80 | byte(n)}
	case n <= 0xffff:
		h = []byte{b0, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(h[2:], uint16(n))
	default:
		h = make([]byte, 10)
		h[0], h[1] = b0, 0x80|127
		binary.BigEndian.PutUint64(h[2:], uint64(n))
	}
	h = append(h, 1, 2, 3, 4) // mask key
	return append(h, bytes.Repeat([]byte{'x'}, n)...)
}

// Only a whole, unfragmented text frame of at most 64 KiB counts as one that
// can be read without waiting: a partial one would make the frames before it
// wait for the network, and control frames are coder/websocket's to handle.
func TestWholeTextFrame(t *testing.T) {
	small, mid, big := frame(0x81, 100), frame(0x81, 300), frame(0x81, protocol.MaxFrameBytes)
	over := frame(0x81, protocol.MaxFrameBytes+1)
	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"one byte", small[:1], false},
		{"small whole", small, true},
		{"small and more", append(append([]byte{}, small...), small[:3]...), true},
		{"small short by one", small[:len(small)-1], false},
		{"16-bit length whole", mid, true},
		{"16-bit length, header cut", mid[:3], false},
		{"16-bit length short by one", mid[:len(mid)-1], false},
		{"64 KiB whole", big, true},
		{"over 64 KiB", over, false},
		{"64-bit length, header cut", frame(0x81, 70000)[:9], false},
		{"absurd 64-bit length", append([]byte{0x81, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, 'x'), false},
		{"unmasked whole", []byte{0x81, 2, '{', '}'}, true},
		{"fragment (no FIN)", frame(0x01, 10), false},
		{"binary", frame(0x82, 10), false},
		{"ping", frame(0x89, 0), false},
		{"close", frame(0x88, 2), false},
		{"RSV bit set", frame(0xC1, 10), false},
	} {
		if got := wholeTextFrame(c.p); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// readAll reads what io.ReadAll(io.LimitReader(r, limit)) reads, into the
// buffer it is given, growing it as needed; a reader's error is passed on.
func TestReadAllIntoBuffer(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 700) // 7,000 bytes, past the buffer
	for _, c := range []struct {
		name  string
		in    []byte
		limit int
		buf   []byte
	}{
		{"empty", nil, 100, make([]byte, 0, 8)},
		{"fits", payload[:50], 100, make([]byte, 0, 64)},
		{"grows", payload, 1 << 20, make([]byte, 0, 16)},
		{"reused, stale bytes beyond len", payload[:30], 100, append(make([]byte, 0, 64), "stale stale stale stale"...)[:0]},
		{"stops at the limit", payload, 4096, make([]byte, 0, 2048)},
		{"exactly the limit", payload[:4096], 4096, make([]byte, 0, 2048)},
		{"nil buffer", payload[:700], 1000, nil},
	} {
		// Reads of an odd size exercise partial reads against the
		// buffer's growth.
		got, err := readAll(&chunky{r: bytes.NewReader(c.in), n: 333}, c.buf, c.limit)
		want := c.in[:min(len(c.in), c.limit)]
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %d bytes (err %v), want %d", c.name, len(got), err, len(want))
		}
	}
	boom := errors.New("boom")
	if _, err := readAll(&chunky{r: iotest.ErrReader(boom), n: 10}, nil, 100); !errors.Is(err, boom) {
		t.Errorf("a failing reader gave %v, want its error", err)
	}
}

// chunky reads at most n bytes at a time.
type chunky struct {
	r io.Reader
	n int
}

func (c *chunky) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }
