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
	"time"

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
	// two identical POSTs — a retry of one that got no answer, or a
	// test's deliberate repeat — must not share a timestamp. signed holds
	// the second each recent POST was signed for, by a digest of its
	// method, path and body; a repeat is signed for the second after the
	// last one, but never more than maxAhead seconds ahead of the client's
	// clock: past that it waits for the clock (see timestamp). GETs and
	// every other method are not checked for repeats by the hub and are
	// signed with the current second.
	mu      sync.Mutex
	signed  map[[sha256.Size]byte]int64
	pruneAt int // prune signed when it grows to this size
}

// maxAhead is how many seconds ahead of its clock the client signs a
// repeated POST at most. The hub accepts ±300 s and counts a request outside
// that as a failed authentication of the key and address, so a burst of
// identical POSTs must not walk the timestamp out of the window; a small
// bound also leaves the client's own clock skew almost all the margin.
const maxAhead = 2

// clockPoll is the longest the client sleeps between two looks at its clock
// while waiting to sign a repeated POST. The wait is computed from
// Options.Now, which may be a test's fake clock moved by another goroutine
// rather than the wall clock, so it is re-read often instead of trusted to
// move in step with a timer.
const clockPoll = 50 * time.Millisecond

// NewHTTP returns a REST client for API key keyID.
func NewHTTP(opts Options, keyID, secret string) *HTTP {
	return &HTTP{opts: opts, keyID: keyID, secret: secret}
}

// repeatChecked reports whether the hub refuses a repeat of a signed request
// with this method (its replay guard checks POSTs only).
func repeatChecked(method string) bool { return method == http.MethodPost }

func requestDigest(method, path string, body []byte) [sha256.Size]byte {
	return sha256.Sum256([]byte(method + "\n" + path + "\n" + string(body)))
}

// timestamp is the X-Timestamp for a request: the current second of the
// client's clock, except for a POST identical to one already signed for that
// second or later, which is signed for the second after that one.
//
// That second is at most maxAhead ahead of the clock. When an identical POST
// needs more (more than maxAhead+1 of them within one second), timestamp
// waits until the clock allows it, or until ctx is done, in which case the
// request is not sent. Waiting is what a payment client should do here:
// the alternatives are a timestamp far ahead (refused as unauthorized once
// past the hub's window, which counts against the key and the address) or
// a signature already used (refused as duplicate_request), and a POS would
// rather have its repeated request served a second late than refused.
func (h *HTTP) timestamp(ctx context.Context, method, path string, body []byte) (string, error) {
	if !repeatChecked(method) {
		return strconv.FormatInt(h.opts.now().Unix(), 10), nil
	}
	d := requestDigest(method, path, body)
	for {
		t := h.opts.now()
		sec, ok := h.reserve(d, t.Unix())
		if ok {
			return strconv.FormatInt(sec, 10), nil
		}
		// The clock must reach second sec-maxAhead.
		wait := min(time.Unix(sec-maxAhead, 0).Sub(t), clockPoll)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return "", fmt.Errorf("client: %s %s: waiting for the clock to sign an identical request afresh: %w", method, path, context.Cause(ctx))
		case <-timer.C:
		}
	}
}

// reserve records d as signed for the next free second from now on and
// returns it, unless that second is more than maxAhead ahead of now: then
// it returns that second and false, and records nothing.
func (h *HTTP) reserve(d [sha256.Size]byte, now int64) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.signed == nil {
		h.signed = map[[sha256.Size]byte]int64{}
	}
	sec := now
	if prev, ok := h.signed[d]; ok && prev >= now {
		sec = prev + 1
	}
	if sec > now+maxAhead {
		return sec, false
	}
	if len(h.signed) >= max(h.pruneAt, 4096) {
		// A second before now constrains nothing any more. What stays
		// is signed for now or later, so it was signed within the last
		// maxAhead seconds (unless the clock went back): the map holds
		// the distinct POSTs of a few seconds.
		for k, v := range h.signed {
			if v < now {
				delete(h.signed, k)
			}
		}
		h.pruneAt = 2 * len(h.signed)
	}
	h.signed[d] = sec
	return sec, true
}

// skipAhead moves the next timestamp of an identical POST up to n seconds
// further on, but never past maxAhead seconds ahead of the clock by itself:
// the next attempt is then signed for at most maxAhead ahead, or, when the
// second refused was that one already, waits for the clock.
func (h *HTTP) skipAhead(method string, u *url.URL, body []byte, n int) {
	if !repeatChecked(method) {
		return
	}
	d := requestDigest(method, protocol.SignedPath(u, false), body)
	now := h.opts.now().Unix()
	h.mu.Lock()
	defer h.mu.Unlock()
	if prev, ok := h.signed[d]; ok {
		h.signed[d] = max(prev, min(prev+int64(n), now+maxAhead-1))
	}
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
// for requests that got no answer at all, or were not sent: a POST
// identical to ones already signed for every second up to maxAhead ahead
// waits for the client's clock, and gives up unsent when ctx is done.
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
	u, err := h.opts.HTTPURL(pathWithQuery)
	if err != nil {
		return nil, err
	}
	// A caller that set its own credentials (a test replaying a request)
	// gets the hub's answer as it is, and its request takes no second from
	// the client's identical ones; otherwise a duplicate_request, which
	// means another process of this key sent the identical POST signed for
	// the same second, is signed for a later second (within maxAhead of the
	// clock, waiting for it if need be) and sent again.
	own := headers.Get(protocol.HeaderTimestamp) == "" && headers.Get(protocol.HeaderSignature) == ""
	for attempt := 1; ; attempt++ {
		resp, err := h.send(ctx, method, u.String(), payload, headers, own)
		if err != nil || !own || attempt == 3 || resp.Status != http.StatusConflict {
			return resp, err
		}
		if e := resp.Err(); e == nil || e.Code != protocol.CodeDuplicateRequest {
			return resp, nil
		}
		// Others may be stepping through the next seconds too: skip a few
		// (within the bound).
		h.skipAhead(method, u, payload, rand.IntN(5))
	}
}

// send signs and sends one attempt of a request. Unless own, the caller's
// headers replace the credentials, so the timestamp is the current second
// and is not recorded.
func (h *HTTP) send(ctx context.Context, method, url string, payload []byte, headers http.Header, own bool) (*Response, error) {
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
	ts := strconv.FormatInt(h.opts.now().Unix(), 10)
	if own {
		if ts, err = h.timestamp(ctx, method, protocol.SignedPath(req.URL, false), payload); err != nil {
			return nil, err
		}
	}
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
