package ratelimit

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestBucketsAllowAndRefill(t *testing.T) {
	b := New(2, 3) // 2 a second, 3 at once
	now := time.Unix(1_700_000_000, 0)
	for i := 0; i < 3; i++ {
		if ok, _ := b.Allow("k", now); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := b.Allow("k", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("past the burst: ok=%v wait=%v, want refused, 500ms", ok, wait)
	}
	if blocked, w := b.Blocked("k", now); !blocked || w != 500*time.Millisecond {
		t.Fatalf("Blocked = %v %v", blocked, w)
	}
	if ok, _ := b.Allow("other", now); !ok {
		t.Fatal("another key shares the bucket")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := b.Allow("k", now); !ok {
		t.Fatal("a token did not come back after 1/rate")
	}
	if ok, _ := b.Allow("k", now); ok {
		t.Fatal("two tokens came back after 1/rate")
	}
	if blocked, _ := b.Blocked("never-seen", now); blocked {
		t.Fatal("an unknown key is blocked")
	}
}

func TestBucketsSweepAndOverflow(t *testing.T) {
	b := New(1, 1)
	b.max = 2000
	now := time.Unix(1_700_000_000, 0)
	for i := 0; i < 1500; i++ {
		b.Allow(string(rune('a'+i%26))+time.Duration(i).String(), now)
	}
	if n := b.Len(); n != 1500 {
		t.Fatalf("Len = %d, want 1500 draining buckets kept", n)
	}
	// A second later every bucket is full again: the next sweep drops them.
	now = now.Add(time.Second)
	for i := 0; i < 600; i++ {
		b.Allow("new"+time.Duration(i).String(), now)
	}
	if n := b.Len(); n >= 1500 {
		t.Fatalf("Len = %d after a sweep, want the refilled buckets gone", n)
	}
	// Past max draining buckets a new key goes through unlimited.
	b2 := New(1, 1)
	b2.max, b2.sweepAt = 3, 3
	for _, k := range []string{"a", "b", "c"} {
		b2.Allow(k, now)
	}
	for i := 0; i < 5; i++ {
		if ok, _ := b2.Allow("d", now); !ok {
			t.Fatal("a key past MaxKeys was refused")
		}
	}
	if b2.Overflows() != 5 {
		t.Fatalf("Overflows = %d, want 5", b2.Overflows())
	}
}

func TestRetryAfter(t *testing.T) {
	for _, c := range []struct {
		wait time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {9500 * time.Millisecond, 10}} {
		if got := RetryAfter(c.wait); got != c.want {
			t.Errorf("RetryAfter(%v) = %d, want %d", c.wait, got, c.want)
		}
	}
}

func TestClientAddr(t *testing.T) {
	ps := ParseProxies([]string{"10.0.0.0/8", "192.0.2.7"})
	req := func(remote string, xff ...string) *http.Request {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{}}
		for _, v := range xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		return r
	}
	for _, c := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"direct", req("203.0.113.5:4000"), "203.0.113.5"},
		{"direct ignores a forged header", req("203.0.113.5:4000", "1.2.3.4"), "203.0.113.5"},
		{"through a proxy", req("10.1.2.3:4000", "198.51.100.9"), "198.51.100.9"},
		{"the client's own entries on the left are not believed", req("10.1.2.3:4000", "1.2.3.4, 198.51.100.9"), "198.51.100.9"},
		{"through two proxies", req("192.0.2.7:80", "198.51.100.9, 10.9.9.9"), "198.51.100.9"},
		{"several headers", req("10.1.2.3:1", "198.51.100.9", "10.0.0.1"), "198.51.100.9"},
		{"a proxy without the header", req("10.1.2.3:4000"), "10.1.2.3"},
		{"garbage in the header", req("10.1.2.3:4000", "nonsense"), "10.1.2.3"},
		{"v4 in v6", req("[::ffff:203.0.113.5]:4000"), "203.0.113.5"},
	} {
		if got := ps.ClientAddr(c.r); got != netip.MustParseAddr(c.want) {
			t.Errorf("%s: ClientAddr = %v, want %s", c.name, got, c.want)
		}
	}
	if got := (Proxies(nil)).ClientAddr(req("not-an-address")); got.IsValid() {
		t.Errorf("an unreadable RemoteAddr gave %v", got)
	}
}

func TestAddrKey(t *testing.T) {
	if k := AddrKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1")); k != "2001:db8:1:2::/64" {
		t.Errorf("v6 key = %q", k)
	}
	if AddrKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1")) != AddrKey(netip.MustParseAddr("2001:db8:1:2:bbbb::9")) {
		t.Error("two addresses of one /64 have different budgets")
	}
	if k := AddrKey(netip.MustParseAddr("203.0.113.5")); k != "203.0.113.5" {
		t.Errorf("v4 key = %q", k)
	}
	if k := AddrKey(netip.Addr{}); k != "unknown" {
		t.Errorf("invalid key = %q", k)
	}
}

// FuzzClientAddr: whatever a client puts in X-Forwarded-For, the address
// is its peer's unless the peer is a trusted proxy, and then one of the
// header's entries that is not a trusted proxy, or the peer.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"198.51.100.9", "1.2.3.4, 10.0.0.1", "", ",,,", "::1, nonsense", "2001:db8::1,10.9.9.9", "10.0.0.1, 10.0.0.2"} {
		f.Add("10.1.2.3:4000", s)
		f.Add("203.0.113.5:1", s)
	}
	ps := ParseProxies([]string{"10.0.0.0/8"})
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := ps.ClientAddr(r)
		peer := peerAddr(remote)
		if !peer.IsValid() || !ps.contains(peer) {
			if got != peer {
				t.Fatalf("untrusted peer %q: got %v", remote, got)
			}
			return
		}
		if got != peer && ps.contains(got) {
			t.Fatalf("a trusted proxy %v was taken for the client", got)
		}
		_ = AddrKey(got)
	})
}
