// Package ratelimit keeps one token bucket per key — an API key, a
// terminal, a source address, a claimed credential id — for the hub's limits
// (docs/protocol.md#credentials). The buckets are golang.org/x/time/rate limiters; every call
// takes the time from the caller, so the hub's injectable clock drives them
// and a test steps a one-per-second rule in microseconds.
package ratelimit

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// MaxKeys bounds how many buckets one Buckets holds. A bucket that has
// refilled is the same as a new one and is dropped when the map is swept;
// past MaxKeys of buckets still draining (a flood from more addresses than
// that), a new key is let through unlimited rather than refused: a limit
// that an attacker could fill must not shut legitimate clients out.
const MaxKeys = 100_000

// Buckets is a set of token buckets with one rate and burst, one per key.
// It is safe for concurrent use.
type Buckets struct {
	limit rate.Limit
	burst int
	max   int

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	sweepAt   int       // sweep when the map grows to this size
	swept     time.Time // the last sweep
	overflows uint64
}

// New makes buckets that refill perSecond tokens a second up to burst.
func New(perSecond float64, burst int) *Buckets {
	return &Buckets{limit: rate.Limit(perSecond), burst: burst, max: MaxKeys, m: map[string]*rate.Limiter{}, sweepAt: 1024}
}

// Allow takes a token from key's bucket at now. When none is left it takes
// nothing and says how long until one is there.
func (b *Buckets) Allow(key string, now time.Time) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.bucketLocked(key, now)
	if l == nil {
		return true, 0
	}
	if l.AllowN(now, 1) {
		return true, 0
	}
	return false, b.waitLocked(l, now)
}

// Blocked reports, without taking a token, whether key's bucket is empty
// at now and how long until it is not.
func (b *Buckets) Blocked(key string, now time.Time) (blocked bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.m[key]
	if !ok || l.TokensAt(now) >= 1 {
		return false, 0
	}
	return true, b.waitLocked(l, now)
}

// Len is how many buckets are held (for tests and metrics).
func (b *Buckets) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// Overflows counts keys let through unlimited because MaxKeys buckets were
// all draining.
func (b *Buckets) Overflows() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.overflows
}

func (b *Buckets) waitLocked(l *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - l.TokensAt(now)
	if missing <= 0 || b.limit <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(missing / float64(b.limit) * float64(time.Second)))
}

// bucketLocked finds or makes key's bucket; nil when the map is full.
func (b *Buckets) bucketLocked(key string, now time.Time) *rate.Limiter {
	if l, ok := b.m[key]; ok {
		return l
	}
	// A full map is swept again at most once a second: under a flood of
	// new keys a sweep per key would cost O(n) each.
	if len(b.m) >= b.sweepAt || (len(b.m) >= b.max && now.Sub(b.swept) >= time.Second) {
		b.sweepLocked(now)
	}
	if len(b.m) >= b.max {
		b.overflows++
		return nil
	}
	l := rate.NewLimiter(b.limit, b.burst)
	b.m[key] = l
	return l
}

// sweepLocked drops the buckets that are full again. The next sweep comes
// when the map has doubled, so sweeping costs O(1) per new key.
func (b *Buckets) sweepLocked(now time.Time) {
	for k, l := range b.m {
		if l.TokensAt(now) >= float64(b.burst) {
			delete(b.m, k)
		}
	}
	b.sweepAt = max(2*len(b.m), 1024)
	b.swept = now
}

// RetryAfter is the Retry-After header value for wait: whole seconds,
// rounded up, at least 1.
func RetryAfter(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}

// Proxies are the reverse proxies whose X-Forwarded-For is believed.
type Proxies []netip.Prefix

// ParseProxies reads addresses and CIDR ranges (config.RateLimit's
// trusted_proxies, already validated).
func ParseProxies(list []string) Proxies {
	var ps Proxies
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			ps = append(ps, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return ps
}

func (ps Proxies) contains(a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the address a request came from: its peer, or, when the
// peer is a trusted proxy, the right-most X-Forwarded-For entry that is not
// one (entries further left are whatever the client chose to send).
func (ps Proxies) ClientAddr(r *http.Request) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if !peer.IsValid() || len(ps) == 0 || !ps.contains(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer // a hop we cannot read: count the request as the proxy's
		}
		a = a.Unmap()
		if !ps.contains(a) {
			return a
		}
	}
	return peer
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// AddrKey is the bucket key of a client address: the address itself for
// IPv4, its /64 for IPv6 (one customer's network hands out a whole /64, so
// counting single v6 addresses would let one client take 2^64 budgets).
func AddrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
