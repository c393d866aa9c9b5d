package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/termhub/termhub/protocol"
)

// replayHub is a REST hub reduced to what decides whether a repeated request
// is served: it checks signatures and the ±300 s window against a clock the
// test moves (the client signs with the same clock), refuses a POST whose
// signature it has seen (409 duplicate_request) and records every request's
// credentials with the clock's second when it arrived.
type replayHub struct {
	*httptest.Server
	clock atomic.Int64 // unix nanoseconds
	mu    sync.Mutex
	seen  map[string]bool // signatures of the POSTs served
	reqs  chan hubRecord
}

type hubRecord struct {
	Method string
	TS     int64  // X-Timestamp
	Sig    string // X-Signature
	At     int64  // the clock's second when the hub received it
	Status int
}

func newReplayHub(t *testing.T) *replayHub {
	h := &replayHub{seen: map[string]bool{}, reqs: make(chan hubRecord, 1024)}
	h.clock.Store(testNow.UnixNano())
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func (h *replayHub) now() time.Time { return time.Unix(0, h.clock.Load()) }

func (h *replayHub) advance(d time.Duration) { h.clock.Add(int64(d)) }

// client is a REST client of pk_test on the hub's clock.
func (h *replayHub) client() *HTTP {
	return NewHTTP(Options{BaseURL: h.URL, Now: h.now, HTTPClient: h.Client()}, "pk_test", testSecrets["pk_test"])
}

func (h *replayHub) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := h.now()
	ts, sig := r.Header.Get(protocol.HeaderTimestamp), r.Header.Get(protocol.HeaderSignature)
	rec := hubRecord{Method: r.Method, Sig: sig, At: now.Unix()}
	rec.TS, _ = strconv.ParseInt(ts, 10, 64)
	defer func() { h.reqs <- rec }()
	if ok, problem := protocol.CheckTimestamp(ts, now); !ok {
		rec.Status = http.StatusUnauthorized
		writeError(w, rec.Status, protocol.CodeUnauthorized, problem)
		return
	}
	if !protocol.VerifySignature(testSecrets["pk_test"], r.Method, protocol.SignedPath(r.URL, false), ts, body, sig) {
		rec.Status = http.StatusUnauthorized
		writeError(w, rec.Status, protocol.CodeUnauthorized, "bad signature")
		return
	}
	if r.Method == http.MethodPost {
		h.mu.Lock()
		dup := h.seen[sig]
		h.seen[sig] = true
		h.mu.Unlock()
		if dup {
			rec.Status = http.StatusConflict
			writeError(w, rec.Status, protocol.CodeDuplicateRequest, "this signed request was already received")
			return
		}
		rec.Status = http.StatusCreated
	} else {
		rec.Status = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.Status)
	w.Write([]byte(`{}`))
}

// next returns the next request the hub received.
func (h *replayHub) next(ctx context.Context, t *testing.T) hubRecord {
	t.Helper()
	select {
	case rec := <-h.reqs:
		return rec
	case <-ctx.Done():
		t.Fatal("the hub received no further request")
		return hubRecord{}
	}
}

// TestHTTPIdenticalGETsSignedWithCurrentSecond: GETs are never refused as
// repeats, so 400 identical GETs within one second (the clock does not move)
// are all signed for that second, not walked out of the ±300 s window.
func TestHTTPIdenticalGETsSignedWithCurrentSecond(t *testing.T) {
	ctx := testCtx(t)
	hub := newReplayHub(t)
	c := hub.client()
	for i := 0; i < 400; i++ {
		resp, err := c.Do(ctx, http.MethodGet, "/v1/transactions?limit=10", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := hub.next(ctx, t)
		if rec.TS != testNow.Unix() || resp.Status != http.StatusOK {
			t.Fatalf("identical GET %d: X-Timestamp %d (clock %d), HTTP %d %s; want the current second, 200",
				i, rec.TS, testNow.Unix(), resp.Status, resp.Body)
		}
	}
}

// TestHTTPIdenticalPOSTBurstStaysWithinBound: 12 identical POSTs sent at
// once while the clock stands still. The first maxAhead+1 are signed for
// the current second and the next ones, the rest wait for the clock: the
// test moves it one second each time the hub has received every request the
// clock allows, and checks that none was signed more than maxAhead seconds
// ahead of the clock, all signatures differ, and all are served.
func TestHTTPIdenticalPOSTBurstStaysWithinBound(t *testing.T) {
	ctx := testCtx(t)
	hub := newReplayHub(t)
	c := hub.client()
	const n = 12
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			resp, err := c.Do(ctx, http.MethodPost, "/v1/payments", map[string]any{"terminalId": "T1", "amountMinor": 700, "currency": "USD", "reference": "burst"}, nil)
			if err == nil && resp.Status != http.StatusCreated {
				err = fmt.Errorf("HTTP %d %s", resp.Status, resp.Body)
			}
			errs <- err
		}()
	}
	sigs := map[string]bool{}
	allowed, advanced := maxAhead+1, 0
	for received := 0; received < n; {
		rec := hub.next(ctx, t)
		received++
		if rec.TS > rec.At+maxAhead || rec.TS < testNow.Unix() {
			t.Fatalf("request %d signed for %d when the clock said %d: more than %d s ahead", received, rec.TS, rec.At, maxAhead)
		}
		if sigs[rec.Sig] || rec.Status != http.StatusCreated {
			t.Fatalf("request %d (X-Timestamp %d): HTTP %d, signature repeated %v", received, rec.TS, rec.Status, sigs[rec.Sig])
		}
		sigs[rec.Sig] = true
		if received == allowed && received < n {
			hub.advance(time.Second) // let one more through
			allowed++
			advanced++
		}
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if advanced != n-maxAhead-1 {
		t.Fatalf("the clock moved %d s for %d identical POSTs, want %d", advanced, n, n-maxAhead-1)
	}
}

// TestHTTPRepeatedPOSTWaitsForClock: once an identical POST has been signed
// for every second up to maxAhead ahead, the next one is not sent until the
// clock moves on, and gives up unsent when its context ends first; GETs
// and other POSTs are not held up meanwhile, nor are requests carrying the
// caller's own credentials counted.
func TestHTTPRepeatedPOSTWaitsForClock(t *testing.T) {
	ctx := testCtx(t)
	hub := newReplayHub(t)
	c := hub.client()
	body := map[string]any{"terminalId": "T1", "amountMinor": 500, "currency": "USD", "reference": "again"}
	now := testNow.Unix()

	// The caller's own credentials take no second from the client's.
	forged := http.Header{protocol.HeaderSignature: {"00"}}
	for i := 0; i < 5; i++ {
		if _, err := c.Do(ctx, http.MethodPost, "/v1/payments", body, forged); err != nil {
			t.Fatal(err)
		}
		hub.next(ctx, t)
	}
	for i := int64(0); i <= maxAhead; i++ {
		resp, err := c.Do(ctx, http.MethodPost, "/v1/payments", body, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rec := hub.next(ctx, t); rec.TS != now+i || resp.Status != http.StatusCreated {
			t.Fatalf("identical POST %d: X-Timestamp %d, HTTP %d %s; want %d, 201", i, rec.TS, resp.Status, resp.Body, now+i)
		}
	}

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	resp, err := c.Do(short, http.MethodPost, "/v1/payments", body, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("identical POST %d within one second: %v %+v, want it held until its context ended", maxAhead+1, err, resp)
	}
	select {
	case rec := <-hub.reqs:
		t.Fatalf("the held POST reached the hub: %+v", rec)
	default:
	}

	// Other requests go at once, signed for the current second.
	if _, err := c.Do(ctx, http.MethodGet, "/v1/payments", nil, nil); err != nil {
		t.Fatal(err)
	}
	if rec := hub.next(ctx, t); rec.TS != now {
		t.Fatalf("GET signed for %d, want %d", rec.TS, now)
	}
	if _, err := c.Do(ctx, http.MethodPost, "/v1/payments", map[string]any{"other": true}, nil); err != nil {
		t.Fatal(err)
	}
	if rec := hub.next(ctx, t); rec.TS != now || rec.Status != http.StatusCreated {
		t.Fatalf("another POST: %+v, want signed for %d and served", rec, now)
	}

	// One second on, the repeat goes, maxAhead ahead.
	hub.advance(time.Second)
	resp, err = c.Do(ctx, http.MethodPost, "/v1/payments", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec := hub.next(ctx, t); rec.TS != now+1+maxAhead || rec.At != now+1 || resp.Status != http.StatusCreated {
		t.Fatalf("the repeat after the clock moved: %+v HTTP %d, want X-Timestamp %d", rec, resp.Status, now+1+maxAhead)
	}
}

// TestHTTPDuplicateRetryStaysWithinBound: another process of the key has
// sent the identical POST for the current second and the next; this client's
// first attempt is refused as duplicate_request, and its retries skip ahead
// no further than maxAhead, and are served.
func TestHTTPDuplicateRetryStaysWithinBound(t *testing.T) {
	ctx := testCtx(t)
	hub := newReplayHub(t)
	for i := 0; i < 20; i++ {
		body := map[string]any{"terminalId": "T1", "amountMinor": 500, "currency": "USD", "reference": fmt.Sprint("r-", i)}
		other := hub.client()
		for j := 0; j < 2; j++ {
			if _, err := other.Do(ctx, http.MethodPost, "/v1/payments", body, nil); err != nil {
				t.Fatal(err)
			}
			hub.next(ctx, t)
		}
		resp, err := hub.client().Do(ctx, http.MethodPost, "/v1/payments", body, nil)
		if err != nil {
			t.Fatal(err)
		}
		for attempt := 1; ; attempt++ {
			rec := hub.next(ctx, t)
			if rec.TS > rec.At+maxAhead {
				t.Fatalf("attempt %d signed for %d at %d", attempt, rec.TS, rec.At)
			}
			if rec.Status == http.StatusCreated {
				break
			}
			if rec.Status != http.StatusConflict || attempt == 3 {
				t.Fatalf("attempt %d: %+v", attempt, rec)
			}
		}
		if resp.Status != http.StatusCreated {
			t.Fatalf("HTTP %d %s", resp.Status, resp.Body)
		}
	}
}

// TestHTTPSignedMemoryPruned: the seconds remembered for identical POSTs
// stay bounded as distinct POSTs go on, and pruning keeps every entry that
// still decides a timestamp.
func TestHTTPSignedMemoryPruned(t *testing.T) {
	c := NewHTTP(Options{BaseURL: "http://127.0.0.1:1"}, "pk_test", "sk_test")
	start := testNow.Unix()
	for i := 0; i < 50_000; i++ {
		now := start + int64(i/1000)
		if _, ok := c.reserve(requestDigest(http.MethodPost, "/v1/payments", []byte(strconv.Itoa(i))), now); !ok {
			t.Fatalf("POST %d refused a second", i)
		}
		if len(c.signed) > 4096 {
			t.Fatalf("after %d distinct POSTs, %d seconds remembered", i+1, len(c.signed))
		}
	}
	// The last POSTs were signed for the current second: their repeats
	// still get the next one, pruned or not.
	now := start + 49
	for i := 49_000; i < 50_000; i++ {
		if sec, ok := c.reserve(requestDigest(http.MethodPost, "/v1/payments", []byte(strconv.Itoa(i))), now); !ok || sec != now+1 {
			t.Fatalf("repeat of POST %d signed for %d (%v), want %d", i, sec, ok, now+1)
		}
	}
}
