package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/termhub/termhub/client"
)

// The load generator's connections to a loopback server (an IPv4 literal:
// not "localhost") come from addresses spread over 127.1.0.0/20 (round
// robin over sourceAddrs, a few connections each), as real terminals come
// from addresses of their own. From one address, the
// kernel finds each new connection's ephemeral port among every socket to
// the same server, the previous connections' TIME_WAIT ones included: in
// a reconnect storm that search costs the generator CPU time it takes from
// the hub on a small machine (docs/performance.md has the figures). Spread
// over 4,064 addresses a port is found at once.

// sourceAddrs is how many loopback source addresses the generator uses.
const sourceAddrs = 16 * 254

var nextSource atomic.Uint32

// sourceAddr returns the next loopback source address: 127.1.x.y, x in
// 0..15, y in 1..254.
func sourceAddr() *net.TCPAddr {
	n := nextSource.Add(1) % sourceAddrs
	return &net.TCPAddr{IP: net.IPv4(127, 1, byte(n/254), byte(1+n%254))}
}

// spreadTransport dials loopback servers from spread source addresses and
// anything else as usual.
var spreadTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone() // proxies, HTTP/2, TLS timeouts as usual
	t.DialContext = spreadDial
	t.MaxIdleConnsPerHost = 64
	return t
}()

// spreadDial dials addr, from the next spread source address when addr is
// an IPv4 loopback one.
func spreadDial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if host, _, err := net.SplitHostPort(addr); err == nil && spreadSources && !noSpread.Load() {
		if ip := net.ParseIP(host); ip != nil && ip.To4() != nil && ip.IsLoopback() {
			sd := d
			sd.LocalAddr, sd.Control = sourceAddr(), bindNoPort
			c, err := sd.DialContext(ctx, network, addr)
			if !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return c, err
			}
			noSpread.Store(true) // a sandbox without 127/8 on its loopback: dial as usual
		}
	}
	return d.DialContext(ctx, network, addr)
}

// noSpread is set once a spread source address could not be bound.
var noSpread atomic.Bool

// spreadClient is the HTTP client of every connection the generator makes.
var spreadClient = &http.Client{Transport: spreadTransport}

// clientOptions returns the client options for a server at url.
func clientOptions(url string) client.Options {
	return client.Options{BaseURL: url, HTTPClient: spreadClient}
}
