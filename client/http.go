package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/termhub/termhub/protocol"
)

// maxResponseBody bounds how much of a REST answer is kept. Transaction
// lists are capped at 100 rows, so this is generous; it only stops a
// misbehaving server from exhausting a benchmark's memory.
const maxResponseBody = 16 << 20

// HTTP calls the hub's REST API as one POS API key. Every request is signed
// over the exact bytes and path it sends, which is the part integrators most
// often get wrong and therefore what the hub's tests must not get wrong.
type HTTP struct {
	opts   Options
	keyID  string
	secret string

	// The hub refuses a signed POST it has seen (duplicate_request), so
	// two identical requests — a retry of one that got no answer, or a
	// test's deliberate repeat — must not share a timestamp. signed holds
	// the second each recent request was signed for, by a digest of its
	// method, path and body; a repeat within that second is signed for the
	// next one (the hub accepts ±300 s).
	mu      sync.Mutex
	signed  map[[sha256.Size]byte]int64
	pruneAt int // prune signed when it grows to this size
}

// NewHTTP returns a REST client for API key keyID.
func NewHTTP(opts Options, keyID, secret string) *HTTP {
	return &HTTP{opts: opts, keyID: keyID, secret: secret}
}

// timestamp is the X-Timestamp for a request: now, unless an identical
// request was signed for now or later already.
func (h *HTTP) timestamp(method, path string, body []byte) string {
	now := h.opts.now().Unix()
	d := sha256.Sum256([]byte(method + "\n" + path + "\n" + string(body)))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.signed == nil {
		h.signed = map[[sha256.Size]byte]int64{}
	}
	sec := now
	if prev, ok := h.signed[d]; ok && prev >= now {
		sec = prev + 1
	}
	if len(h.signed) >= max(h.pruneAt, 4096) {
		for k, v := range h.signed {
			if v < now {
				delete(h.signed, k)
			}
		}
		h.pruneAt = 2 * len(h.signed)
	}
	h.signed[d] = sec
	return strconv.FormatInt(sec, 10)
}

// skipAhead moves the next timestamp of an identical request n seconds
// further on.
func (h *HTTP) skipAhead(method string, u *url.URL, body []byte, n int) {
	d := sha256.Sum256([]byte(method + "\n" + protocol.SignedPath(u, false) + "\n" + string(body)))
	h.mu.Lock()
	defer h.mu.Unlock()
	h.signed[d] += int64(n)
}

// Response is a REST answer read in full, so callers can assert on status,
// headers (Retry-After, Location) and body without managing a stream.
type Response struct {
	Status int
	Body   []byte
	Header http.Header
}

// Decode unmarshals the body into v.
func (r *Response) Decode(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("client: decoding HTTP %d body %.200q: %w", r.Status, r.Body, err)
	}
	return nil
}

// Err returns the contract's error for a 4xx/5xx answer and nil for any other
// status. A failure whose body is not the contract's {"error":{...}} shape
// (a proxy's page, say) still yields an error, with a code guessed from the
// status and the body as message, so callers never mistake it for success.
func (r *Response) Err() *protocol.Error {
	if r.Status < 400 {
		return nil
	}
	var b protocol.ErrorBody
	if json.Unmarshal(r.Body, &b) == nil && b.Error != nil {
		return b.Error
	}
	return &protocol.Error{Code: codeForStatus(r.Status), Message: fmt.Sprintf("HTTP %d: %.200s", r.Status, r.Body)}
}

func codeForStatus(status int) protocol.Code {
	switch status {
	case http.StatusBadRequest:
		return protocol.CodeInvalidRequest
	case http.StatusUnauthorized:
		return protocol.CodeUnauthorized
	case http.StatusNotFound:
		return protocol.CodeNotFound
	case http.StatusTooManyRequests:
		return protocol.CodeRateLimited
	case http.StatusServiceUnavailable:
		return protocol.CodeUnavailable
	}
	return protocol.CodeInternal
}

// Do sends a signed request. pathWithQuery is the escaped path and query
// exactly as they should appear on the wire (e.g.
// "/v1/transactions?status=COMPLETED&limit=10"); it is signed as given.
//
// body is marshalled as JSON, except that nil sends no body and a []byte or
// json.RawMessage is sent unchanged (for tests of malformed input). headers
// are applied after the credentials, so a test may replace one of them
// (a stale X-Timestamp, a wrong X-Signature) as well as add
// Idempotency-Key or X-Session-Id.
//
// A non-2xx answer is not an error here; check Response.Err. The error is
// for requests that got no answer at all.
func (h *HTTP) Do(ctx context.Context, method, pathWithQuery string, body any, headers http.Header) (*Response, error) {
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	case json.RawMessage:
		payload = b
	default:
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("client: encoding %s %s body: %w", method, pathWithQuery, err)
		}
	}
	u, err := h.opts.resolve(pathWithQuery)
	if err != nil {
		return nil, err
	}
	// A caller that set its own credentials (a test replaying a request)
	// gets the hub's answer as it is; otherwise a duplicate_request, which
	// means another process of this key sent the identical request signed
	// for the same second, is signed for the next second and sent again.
	own := headers.Get(protocol.HeaderTimestamp) == "" && headers.Get(protocol.HeaderSignature) == ""
	for attempt := 1; ; attempt++ {
		resp, err := h.send(ctx, method, u.String(), payload, headers)
		if err != nil || !own || attempt == 3 || resp.Status != http.StatusConflict {
			return resp, err
		}
		if e := resp.Err(); e == nil || e.Code != protocol.CodeDuplicateRequest {
			return resp, nil
		}
		// Others may be stepping through the next seconds too: skip a few.
		h.skipAhead(method, u, payload, rand.IntN(5))
	}
}

// send signs and sends one attempt of a request.
func (h *HTTP) send(ctx context.Context, method, url string, payload []byte, headers http.Header) (*Response, error) {
	var rd io.Reader
	if len(payload) > 0 {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if len(payload) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	ts := h.timestamp(method, protocol.SignedPath(req.URL, false), payload)
	req.Header.Set(protocol.HeaderAPIKey, h.keyID)
	req.Header.Set(protocol.HeaderTimestamp, ts)
	// Sign over the URL of the request itself: that is what the request line
	// will carry, whatever normalisation parsing did.
	req.Header.Set(protocol.HeaderSignature, protocol.Sign(h.secret, method, protocol.SignedPath(req.URL, false), ts, payload))
	for k, vs := range headers {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := h.opts.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, fmt.Errorf("client: reading %s %s answer: %w", method, req.URL.Path, err)
	}
	return &Response{Status: resp.StatusCode, Body: data, Header: resp.Header}, nil
}
