// Package client is the Go side of termhub's wire contract for the programs
// that talk to a hub: the terminal simulator, the POS command line, the load
// generator and the hub's own end-to-end tests. It exists so that each of
// them signs requests, dials WebSockets and survives disconnects the same way
// a real integrator would, instead of every caller re-deriving docs/protocol.md.
//
// It depends only on package protocol (signing, message types) and the
// WebSocket library, never on the hub, so a test that uses it exercises the
// hub from the outside exactly as a POS or terminal does.
package client

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Options says where the hub is and how to reach it. The zero value of every
// field but BaseURL is usable, so callers only set what a test needs to
// control.
type Options struct {
	// BaseURL is the hub's address, e.g. "http://127.0.0.1:8080". ws:// and
	// wss:// are accepted too. A path prefix (a hub behind a proxy) is kept.
	BaseURL string

	// Now supplies the signing timestamp. Tests set it to sign with a skewed
	// or fake clock; nil means time.Now.
	Now func() time.Time

	// HTTPClient carries both REST calls and WebSocket handshakes, so a test
	// can point it at an httptest server's client or add a timeout. nil
	// means http.DefaultClient.
	HTTPClient *http.Client

	// QueryAuth moves the WebSocket credentials from headers into the query
	// string (protocol.SignURL), the form browsers must use because they
	// cannot set headers on an upgrade.
	QueryAuth bool
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) httpClient() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return http.DefaultClient
}

// HTTPURL is the http(s) URL of pathWithQuery on the hub of BaseURL (ws and
// wss become http and https), as every request of the client is sent.
func (o Options) HTTPURL(pathWithQuery string) (*url.URL, error) {
	if o.BaseURL == "" {
		return nil, errors.New("client: Options.BaseURL is empty")
	}
	if !strings.HasPrefix(pathWithQuery, "/") {
		return nil, errors.New("client: path must start with /: " + pathWithQuery)
	}
	u, err := url.Parse(strings.TrimSuffix(o.BaseURL, "/") + pathWithQuery)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, errors.New("client: BaseURL scheme must be http, https, ws or wss: " + o.BaseURL)
	}
	return u, nil
}
