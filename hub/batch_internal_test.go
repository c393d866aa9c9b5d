package hub

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

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
