package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/termhub/termhub/clock"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/internal/keys"
	"github.com/termhub/termhub/internal/metrics"
	"github.com/termhub/termhub/internal/redistest"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

const (
	merchant = "m1"
	secret   = "whsec_test_0123456789"
	pan      = "424242******4242"
)

var start = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// ---- the receiver ----

// hit is one request the receiver got.
type hit struct {
	Path    string
	EventID string // Termhub-Event-Id
	BodyID  string // the body's id
	Type    string
	T       int64 // the signature's timestamp
	SigOK   bool
	CTOK    bool
	Body    []byte
}

// receiver is a merchant's webhook endpoint: it checks every signature by
// recomputing the HMAC and dedupes events by id.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret atomic.Pointer[string]

	mu        sync.Mutex
	hits      []hit
	delivered map[string]int // event id → 2xx answers given (more than 1 = a duplicate)
	// answer returns the status for the n-th request (1-based); 0 means
	// block until the client gives up or the test ends.
	answer  func(n int, h hit) int
	release chan struct{}
}

func newReceiver(t *testing.T, answer func(n int, h hit) int) *receiver {
	rc := &receiver{t: t, delivered: map[string]int{}, answer: answer, release: make(chan struct{})}
	s := secret
	rc.secret.Store(&s)
	mux := http.NewServeMux()
	mux.HandleFunc("/", rc.serve)
	rc.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(rc.release)
		rc.srv.Close()
	})
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := hit{Path: r.URL.Path, EventID: r.Header.Get("Termhub-Event-Id"), Body: body, CTOK: r.Header.Get("Content-Type") == "application/json"}
	var ev struct{ ID, Type string }
	_ = json.Unmarshal(body, &ev)
	h.BodyID, h.Type = ev.ID, ev.Type
	// Termhub-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
	var ts, v1 string
	for _, p := range strings.Split(r.Header.Get("Termhub-Signature"), ",") {
		if v, ok := strings.CutPrefix(p, "t="); ok {
			ts = v
		} else if v, ok := strings.CutPrefix(p, "v1="); ok {
			v1 = v
		}
	}
	h.T, _ = strconv.ParseInt(ts, 10, 64)
	mac := hmac.New(sha256.New, []byte(*rc.secret.Load()))
	mac.Write([]byte(ts + "." + string(body)))
	got, _ := hex.DecodeString(v1)
	h.SigOK = ts != "" && hmac.Equal(got, mac.Sum(nil))

	rc.mu.Lock()
	rc.hits = append(rc.hits, h)
	n := len(rc.hits)
	answer := rc.answer
	rc.mu.Unlock()
	status := http.StatusOK
	if answer != nil {
		status = answer(n, h)
	}
	if status == 0 {
		select {
		case <-r.Context().Done():
		case <-rc.release:
		}
		return
	}
	if status == http.StatusFound {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
		return
	}
	if h.SigOK && status/100 == 2 {
		rc.mu.Lock()
		rc.delivered[h.EventID]++
		rc.mu.Unlock()
	}
	w.WriteHeader(status)
}

func (rc *receiver) setAnswer(f func(n int, h hit) int) {
	rc.mu.Lock()
	rc.answer = f
	rc.mu.Unlock()
}

func (rc *receiver) all() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

func (rc *receiver) count() int { return len(rc.all()) }

func (rc *receiver) deliveredCount(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.delivered[id]
}

// ---- the rig ----

type outcome struct {
	merchant string
	d        Delivery
	result   string
}

// rig is a Redis, a fake clock, a directory and the senders of one test.
type rig struct {
	t        *testing.T
	r        *redistest.Redis
	clk      *clock.Fake
	ks       keys.Space
	dir      atomic.Pointer[config.Directory]
	met      *metrics.Metrics
	logs     *kit.LogBuffer
	outcomes chan outcome
}

func newRig(t *testing.T, url string) *rig {
	r := redistest.New(t)
	g := &rig{t: t, r: r, clk: clock.NewFake(start), ks: keys.Space{Prefix: r.Prefix}, met: metrics.New(),
		logs: &kit.LogBuffer{}, outcomes: make(chan outcome, 1000)}
	g.setEndpoint(url, secret)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sender log:\n%s", g.logs.String())
		}
	})
	return g
}

// setEndpoint replaces the directory (a reload) with m1's url and secret.
func (g *rig) setEndpoint(url, sec string) {
	g.dir.Store(config.NewDirectory(config.Config{Merchants: []config.Merchant{
		{ID: merchant, WebhookURL: url, WebhookSecret: sec},
		{ID: "m2"}, // no webhooks
	}}))
}

// options are the options of a test sender; mod may change them.
func (g *rig) options(mod func(*Options)) Options {
	o := Options{
		Redis: g.r.Client, Keys: g.ks, Clock: g.clk, Metrics: g.met,
		Logger:    zerolog.New(g.logs).Level(zerolog.DebugLevel),
		Directory: func() *config.Directory { return g.dir.Load() },
		RetryBase: 5 * time.Second,
		Rand:      func() float64 { return 0.5 }, // no jitter
		Consumer:  "node-a",
		ReadBlock: 50 * time.Millisecond,
		// Advancing the fake clock by a day runs 1440 sweeps at the default
		// interval; every 10 minutes is plenty for the tests.
		SweepEvery: 10 * time.Minute,
		onAttempt: func(m string, d Delivery, result string) {
			g.outcomes <- outcome{m, d, result}
		},
	}
	if mod != nil {
		mod(&o)
	}
	return o
}

// sender starts a Sender, closed when the test ends.
func (g *rig) sender(mod func(*Options)) *Sender {
	g.t.Helper()
	s := New(g.options(mod))
	if err := s.Start(context.Background()); err != nil {
		g.t.Fatalf("Start: %v", err)
	}
	g.t.Cleanup(s.Close)
	return s
}

// add appends an event to m1's stream the way the engine's commit does and
// returns its id and body.
func (g *rig) add(typ string, createdAt time.Time) (string, []byte) {
	g.t.Helper()
	n := len(g.r.Client.Keys(context.Background(), g.ks.Webhooks(merchant)).Val())
	id := fmt.Sprintf("evt_%d_%d", createdAt.UnixNano(), time.Now().UnixNano()+int64(n))
	txn := &protocol.Transaction{ID: "txn_" + id[4:], MerchantID: merchant, TerminalID: "T1", Type: protocol.TypeSale,
		Status: protocol.StatusCompleted, AmountMinor: 1250, Amount: "12.50", Currency: "USD", Reference: "order-" + id,
		MaskedPAN: pan, CreatedAt: createdAt, UpdatedAt: createdAt, Version: 4}
	body, err := json.Marshal(session.WebhookEvent{ID: id, Type: typ, CreatedAt: createdAt, Data: session.WebhookData{Transaction: txn}})
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.r.Client.XAdd(context.Background(), &redis.XAddArgs{Stream: g.ks.Webhooks(merchant), Values: []any{"m", body}}).Err(); err != nil {
		g.t.Fatal(err)
	}
	return id, body
}

// next waits for the next attempt outcome.
func (g *rig) next() outcome {
	g.t.Helper()
	select {
	case o := <-g.outcomes:
		return o
	case <-time.After(10 * time.Second):
		g.t.Fatal("no webhook attempt within 10s")
	}
	return outcome{}
}

// expect waits for the next outcome and checks its result and event.
func (g *rig) expect(result, eventID string) outcome {
	g.t.Helper()
	o := g.next()
	if o.result != result || o.d.EventID != eventID {
		g.t.Fatalf("attempt: %s of %s (%+v), want %s of %s", o.result, o.d.EventID, o.d, result, eventID)
	}
	return o
}

// none checks that no attempt has finished since the last one looked at.
func (g *rig) none() {
	g.t.Helper()
	select {
	case o := <-g.outcomes:
		g.t.Fatalf("unexpected attempt: %s of %s", o.result, o.d.EventID)
	default:
	}
}

// empty checks that nothing of m1's deliveries is left in Redis.
func (g *rig) empty() {
	g.t.Helper()
	ctx := context.Background()
	c := g.r.Client
	if n := c.XLen(ctx, g.ks.Webhooks(merchant)).Val(); n != 0 {
		g.t.Errorf("stream still holds %d entries", n)
	}
	if p, err := c.XPending(ctx, g.ks.Webhooks(merchant), DefaultGroup).Result(); err != nil || p.Count != 0 {
		g.t.Errorf("pending entries: %+v %v", p, err)
	}
	if n := c.ZCard(ctx, g.ks.WebhookRetry(merchant)).Val(); n != 0 {
		g.t.Errorf("schedule still holds %d entries", n)
	}
	if n := c.HLen(ctx, g.ks.WebhookState(merchant)).Val(); n != 0 {
		g.t.Errorf("state still holds %d entries", n)
	}
}

func (g *rig) metric(result string) float64 {
	return value(g.met.WebhookDelivered.WithLabelValues(result))
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// clean checks the log never carried the secret, a signature, the body or
// the card number.
func (g *rig) clean() {
	g.t.Helper()
	logs := g.logs.String()
	for _, bad := range []string{secret, "v1=", pan, "424242", `"data"`, "maskedPan"} {
		if strings.Contains(logs, bad) {
			g.t.Errorf("log carries %q:\n%s", bad, logs)
		}
	}
}

// ---- tests ----

func TestDeliversTheStoredBytesSigned(t *testing.T) {
	rc := newReceiver(t, nil)
	g := newRig(t, rc.url())
	g.sender(nil)
	id, body := g.add("payment.completed", start)
	g.expect(ResultOK, id)

	hits := rc.all()
	if len(hits) != 1 {
		t.Fatalf("%d requests, want 1", len(hits))
	}
	h := hits[0]
	if !h.SigOK || !h.CTOK || h.EventID != id || h.BodyID != id || h.Type != "payment.completed" || h.Path != "/hook" {
		t.Fatalf("request = %+v", h)
	}
	if !bytes.Equal(h.Body, body) {
		t.Fatalf("body differs from the stored event:\n got %s\nwant %s", h.Body, body)
	}
	if h.T != start.Unix() {
		t.Fatalf("signature t=%d, want the clock's %d", h.T, start.Unix())
	}
	if g.metric(ResultOK) != 1 || g.metric(ResultFailed) != 0 {
		t.Fatalf("metrics ok=%v failed=%v", g.metric(ResultOK), g.metric(ResultFailed))
	}
	g.empty()
	g.clean()
}

func TestRetriesAfterRetryBaseWithTheSameID(t *testing.T) {
	rc := newReceiver(t, func(n int, h hit) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url())
	g.sender(nil)
	id, _ := g.add("payment.completed", start)
	o := g.expect(ResultFailed, id)
	if o.d.Attempts != 1 || o.d.LastStatusCode != 500 || !o.d.NextAttemptAt.Equal(start.Add(5*time.Second)) {
		t.Fatalf("after the first attempt: %+v", o.d)
	}

	g.clk.Advance(5*time.Second - time.Millisecond)
	g.none()
	if rc.count() != 1 {
		t.Fatalf("%d requests before webhook_retry_base passed", rc.count())
	}
	g.clk.Advance(time.Millisecond) // the retry runs inside Advance
	g.expect(ResultOK, id)
	hits := rc.all()
	if len(hits) != 2 || hits[0].EventID != id || hits[1].EventID != id || hits[1].BodyID != id || !hits[0].SigOK || !hits[1].SigOK {
		t.Fatalf("requests = %+v", hits)
	}
	if hits[1].T != start.Add(5*time.Second).Unix() {
		t.Fatalf("retry signed at t=%d, want %d", hits[1].T, start.Add(5*time.Second).Unix())
	}
	if rc.deliveredCount(id) != 1 {
		t.Fatalf("delivered %d times", rc.deliveredCount(id))
	}
	if g.metric(ResultOK) != 1 || g.metric(ResultFailed) != 1 || value(g.met.WebhookRetries) != 1 {
		t.Fatalf("metrics ok=%v failed=%v retries=%v", g.metric(ResultOK), g.metric(ResultFailed), value(g.met.WebhookRetries))
	}
	g.empty()
	g.clean()
}

func TestRetryDelayHasJitter(t *testing.T) {
	for _, c := range []struct {
		r    float64
		want time.Duration
	}{{0, 4 * time.Second}, {0.75, 5500 * time.Millisecond}, {0.999, 5998 * time.Millisecond}} {
		t.Run(fmt.Sprint(c.r), func(t *testing.T) {
			rc := newReceiver(t, func(n int, h hit) int {
				if n == 1 {
					return http.StatusServiceUnavailable
				}
				return http.StatusNoContent
			})
			g := newRig(t, rc.url())
			g.sender(func(o *Options) { o.Rand = func() float64 { return c.r } })
			id, _ := g.add("payment.declined", start)
			o := g.expect(ResultFailed, id)
			if got := o.d.NextAttemptAt.Sub(start); got != c.want {
				t.Fatalf("retry in %v, want %v", got, c.want)
			}
			g.clk.Advance(c.want - time.Millisecond)
			g.none()
			g.clk.Advance(time.Millisecond)
			g.expect(ResultOK, id)
			g.empty()
		})
	}
}

func TestBackoff(t *testing.T) {
	const base, max = 5 * time.Second, time.Hour
	for n, want := range map[int]time.Duration{
		1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second, 4: 40 * time.Second,
		10: 2560 * time.Second, 11: time.Hour, 12: time.Hour, 40: time.Hour, 70: time.Hour, 1000: time.Hour,
	} {
		if got := Backoff(base, max, 0.2, n, 0.5); got != want {
			t.Errorf("Backoff(n=%d) = %v, want %v", n, got, want)
		}
	}
	// ±20%, never above the cap.
	for n := 1; n < 80; n++ {
		plain := Backoff(base, max, 0, n, 0)
		for _, r := range []float64{0, 0.1, 0.5, 0.9, 0.999999} {
			got := Backoff(base, max, 0.2, n, r)
			if got < plain*8/10 || got > plain*12/10 || got > max {
				t.Errorf("Backoff(n=%d, r=%v) = %v, outside ±20%% of %v or above %v", n, r, got, plain, max)
			}
		}
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	rc := newReceiver(t, func(n int, h hit) int {
		if h.Path == "/elsewhere" {
			return http.StatusOK
		}
		if n <= 2 {
			return http.StatusFound
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url())
	g.sender(nil)
	id, _ := g.add("payment.voided", start)
	o := g.expect(ResultFailed, id)
	if o.d.LastStatusCode != http.StatusFound || o.d.LastError != "redirect not followed" {
		t.Fatalf("after a 302: %+v", o.d)
	}
	g.clk.Advance(5 * time.Second)
	o = g.expect(ResultFailed, id)
	if o.d.Attempts != 2 || !o.d.NextAttemptAt.Equal(start.Add(15*time.Second)) {
		t.Fatalf("after the second 302: %+v", o.d)
	}
	g.clk.Advance(10 * time.Second)
	g.expect(ResultOK, id)
	for _, h := range rc.all() {
		if h.Path != "/hook" {
			t.Fatalf("the redirect was followed to %s", h.Path)
		}
	}
	if rc.count() != 3 {
		t.Fatalf("%d requests, want 3", rc.count())
	}
	g.empty()
}

func TestNoAnswerWithinTimeoutIsRetried(t *testing.T) {
	rc := newReceiver(t, func(n int, h hit) int {
		if n == 1 {
			return 0 // never answers (until the test ends)
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url())
	g.sender(func(o *Options) { o.Timeout = 100 * time.Millisecond })
	id, _ := g.add("refund.completed", start)
	o := g.expect(ResultFailed, id)
	if o.d.LastStatusCode != 0 || !strings.Contains(o.d.LastError, "timeout") || o.d.Attempts != 1 {
		t.Fatalf("after no answer: %+v", o.d)
	}
	g.clk.Advance(5 * time.Second)
	g.expect(ResultOK, id)
	if hits := rc.all(); len(hits) != 2 || hits[1].EventID != id {
		t.Fatalf("requests = %+v", hits)
	}
	g.empty()
	g.clean()
}

func TestDefaultTimeoutIsTenSeconds(t *testing.T) {
	s := New(Options{})
	if s.opts.Timeout != 10*time.Second || s.opts.Client.CheckRedirect == nil {
		t.Fatalf("timeout %v, CheckRedirect set %v", s.opts.Timeout, s.opts.Client.CheckRedirect != nil)
	}
	s.Close()
}

func TestGivesUpAfter24Hours(t *testing.T) {
	rc := newReceiver(t, func(int, hit) int { return http.StatusBadGateway })
	g := newRig(t, rc.url())
	g.sender(nil)
	id, _ := g.add("payment.failed", start)
	g.expect(ResultFailed, id)

	// Retries after 5s, 10s, … 2560s (10 of them, 5115s in all), then hourly:
	// 22 more fit in 24 h; the next would fall after 24 h.
	g.clk.Advance(25 * time.Hour)
	var last outcome
	for i := 2; ; i++ {
		o := g.next()
		if o.d.EventID != id {
			t.Fatalf("attempt of %s", o.d.EventID)
		}
		if o.result == ResultGaveUp {
			last = o
			if i != 33 {
				t.Fatalf("gave up at attempt %d, want 33", i)
			}
			break
		}
		if o.result != ResultFailed || o.d.Attempts != i {
			t.Fatalf("attempt %d: %s %+v", i, o.result, o.d)
		}
	}
	if last.d.Attempts != 33 || last.d.LastAttemptAt.After(start.Add(24*time.Hour)) {
		t.Fatalf("last attempt %+v", last.d)
	}
	hits := rc.all()
	if len(hits) != 33 {
		t.Fatalf("%d requests, want 33", len(hits))
	}
	for _, h := range hits {
		if h.EventID != id || !h.SigOK {
			t.Fatalf("request %+v", h)
		}
		if at := time.Unix(h.T, 0); at.After(start.Add(24 * time.Hour)) {
			t.Fatalf("attempt at %v, after 24 h", at)
		}
	}
	if g.metric(ResultGaveUp) != 1 || g.metric(ResultFailed) != 32 || g.metric(ResultOK) != 0 {
		t.Fatalf("metrics gave_up=%v failed=%v ok=%v", g.metric(ResultGaveUp), g.metric(ResultFailed), g.metric(ResultOK))
	}
	if !strings.Contains(g.logs.String(), "webhook delivery given up") || !strings.Contains(g.logs.String(), `"level":"warn"`) {
		t.Fatalf("no warning logged:\n%s", g.logs.String())
	}
	g.clk.Advance(24 * time.Hour)
	g.none()
	if rc.count() != 33 {
		t.Fatal("attempted again after giving up")
	}
	g.empty()
	g.clean()
}

func TestEventOlderThan24HoursIsTriedOnceThenGivenUp(t *testing.T) {
	rc := newReceiver(t, func(int, hit) int { return http.StatusInternalServerError })
	g := newRig(t, rc.url())
	g.sender(nil)
	id, _ := g.add("payment.completed", start.Add(-30*time.Hour)) // queued while no hub ran
	g.expect(ResultGaveUp, id)
	g.empty()
}

func TestRestartResumesTheRetrySchedule(t *testing.T) {
	rc := newReceiver(t, func(n int, h hit) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url())
	first := g.sender(nil)
	id, _ := g.add("payment.completed", start)
	g.expect(ResultFailed, id)
	g.clk.Advance(5 * time.Second)
	g.expect(ResultFailed, id) // next attempt due at start+15s
	first.Close()              // the hub stops (as good as kill -9: nothing is written on close while idle)

	g.clk.Advance(7 * time.Second) // no hub runs
	g.none()

	second := g.sender(func(o *Options) { o.Consumer = "node-b" }) // another hub, same Redis
	st, err := second.Status(context.Background(), 0)
	if err != nil || len(st) != 1 || st[0].Pending != 1 || st[0].Deliveries[0].Attempts != 2 ||
		!st[0].Deliveries[0].NextAttemptAt.Equal(start.Add(15*time.Second)) || st[0].Deliveries[0].EventID != id {
		t.Fatalf("status after restart: %+v %v", st, err)
	}
	g.clk.Advance(3*time.Second - time.Millisecond)
	g.none()
	g.clk.Advance(time.Millisecond)
	o := g.expect(ResultOK, id)
	if o.d.Attempts != 3 {
		t.Fatalf("attempts %d, want 3", o.d.Attempts)
	}
	if hits := rc.all(); len(hits) != 3 || hits[2].EventID != id || rc.deliveredCount(id) != 1 {
		t.Fatalf("requests = %+v", hits)
	}
	g.empty()
}

// readRaw reads m1's new entries as consumer without scheduling them (a hub
// killed right after XREADGROUP) and returns their ids.
func (g *rig) readRaw(consumer string) []string {
	g.t.Helper()
	ctx := context.Background()
	c := g.r.Client
	if err := c.XGroupCreateMkStream(ctx, g.ks.Webhooks(merchant), DefaultGroup, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		g.t.Fatal(err)
	}
	res, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: DefaultGroup, Consumer: consumer, Streams: []string{g.ks.Webhooks(merchant), ">"}, Block: -1}).Result()
	if err != nil || len(res) != 1 || len(res[0].Messages) == 0 {
		g.t.Fatalf("raw read: %v %v", res, err)
	}
	var ids []string
	for _, m := range res[0].Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestCloseMidAttemptLeavesTheEventDue(t *testing.T) {
	arrived := make(chan struct{}, 1)
	rc := newReceiver(t, func(n int, h hit) int {
		if n == 1 {
			arrived <- struct{}{}
			return 0 // hangs until the sender gives up
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url())
	first := g.sender(nil)
	id, _ := g.add("payment.completed", start)
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
	first.Close() // SIGTERM mid-attempt: not an attempt, the event stays due
	g.none()
	if g.metric(ResultFailed) != 0 {
		t.Fatal("an interrupted attempt was counted as failed")
	}
	if z := g.r.Client.ZRangeWithScores(context.Background(), g.ks.WebhookRetry(merchant), 0, -1).Val(); len(z) != 1 || int64(z[0].Score) != start.UnixMilli() {
		t.Fatalf("schedule after close: %+v", z)
	}
	g.sender(func(o *Options) { o.Consumer = "node-b" })
	if o := g.expect(ResultOK, id); o.d.Attempts != 1 {
		t.Fatalf("attempts %d, want 1", o.d.Attempts)
	}
	g.empty()
}

func TestHubKilledMidAttemptIsRetriedWhenItsLeaseEnds(t *testing.T) {
	rc := newReceiver(t, nil)
	g := newRig(t, rc.url())
	id, _ := g.add("payment.completed", start)
	// A hub read the entry, scheduled it, took it for an attempt (a lease of
	// 2×10 s + 30 s) and was killed.
	entry := g.readRaw("dead-node")[0]
	ctx := context.Background()
	keys := []string{g.ks.WebhookRetry(merchant), g.ks.WebhookState(merchant), g.ks.Webhooks(merchant)}
	if err := scheduleScript.Run(ctx, g.r.Client, keys, entry, start.UnixMilli(), "{}").Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := takeScript.Run(ctx, g.r.Client, keys[:1], entry, start.UnixMilli(), start.Add(50*time.Second).UnixMilli()).Bool(); err != nil || !ok {
		t.Fatalf("take: %v %v", ok, err)
	}
	g.sender(func(o *Options) { o.Consumer = "node-b"; o.ClaimMinIdle = 0 })
	g.clk.Advance(50*time.Second - time.Millisecond)
	g.none()
	if rc.count() != 0 {
		t.Fatal("attempted while another hub held the lease")
	}
	g.clk.Advance(time.Millisecond)
	g.expect(ResultOK, id)
	g.empty()
}

func TestRestartRereadsItsOwnPendingEntries(t *testing.T) {
	rc := newReceiver(t, nil)
	g := newRig(t, rc.url())
	id, _ := g.add("payment.cancelled", start)
	g.readRaw("node-a") // node-a read it and died before scheduling it
	// node-a comes back; claiming from others is off, so only "0" finds it.
	g.sender(func(o *Options) { o.ClaimMinIdle = time.Hour })
	g.expect(ResultOK, id)
	g.empty()
}

func TestAbandonedEntriesAreClaimed(t *testing.T) {
	rc := newReceiver(t, nil)
	g := newRig(t, rc.url())
	id1, _ := g.add("payment.completed", start)
	id2, _ := g.add("payment.declined", start)
	g.readRaw("dead-node") // read by a hub that never comes back

	g.sender(func(o *Options) { o.Consumer = "node-b"; o.ClaimMinIdle = 0 })
	got := map[string]bool{}
	for range 2 {
		o := g.next()
		if o.result != ResultOK {
			t.Fatalf("attempt %+v", o)
		}
		got[o.d.EventID] = true
	}
	if !got[id1] || !got[id2] {
		t.Fatalf("delivered %v", got)
	}
	g.empty()
}

func TestSweepClaimsEntriesLeftByADeadHub(t *testing.T) {
	rc := newReceiver(t, nil)
	g := newRig(t, rc.url())
	g.sender(func(o *Options) { o.Consumer = "node-b"; o.ClaimMinIdle = 0 })

	// A hub that dies right after reading: XADD and its XREADGROUP in one
	// transaction, so this hub's reader never sees the entry.
	ctx := context.Background()
	_, body := g.add("payment.superseded", start) // a first event, to learn the shape
	g.expect(ResultOK, mustID(t, body))
	id := "evt_left_by_a_dead_hub"
	body = bytes.Replace(body, []byte(mustID(t, body)), []byte(id), 1)
	_, err := g.r.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: g.ks.Webhooks(merchant), Values: []any{"m", body}})
		p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: DefaultGroup, Consumer: "dead-node", Streams: []string{g.ks.Webhooks(merchant), ">"}, Block: -1})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.r.Client.XPending(ctx, g.ks.Webhooks(merchant), DefaultGroup).Result()
	if err != nil || p.Count != 1 || p.Consumers["dead-node"] != 1 {
		t.Fatalf("pending %+v %v", p, err)
	}
	g.none()
	g.clk.Advance(10 * time.Minute) // the sweep claims and delivers it, inside Advance
	g.expect(ResultOK, id)
	g.empty()
}

func mustID(t *testing.T, body []byte) string {
	var ev struct{ ID string }
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

func TestTwoHubsAttemptEachEventOnce(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	rc := newReceiver(t, func(n int, h hit) int {
		mu.Lock()
		defer mu.Unlock()
		if !seen[h.EventID] {
			seen[h.EventID] = true
			return http.StatusInternalServerError // every first attempt fails
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url())
	g.sender(func(o *Options) { o.Consumer = "node-a"; o.ClaimMinIdle = 0 })
	g.sender(func(o *Options) { o.Consumer = "node-b"; o.ClaimMinIdle = 0 })
	const n = 30
	var ids []string
	for range n {
		id, _ := g.add("payment.completed", start)
		ids = append(ids, id)
	}
	for range n {
		if o := g.next(); o.result != ResultFailed || o.d.Attempts != 1 {
			t.Fatalf("first attempt %+v", o)
		}
	}
	g.clk.Advance(5 * time.Second) // every retry runs inside Advance
	for range n {
		if o := g.next(); o.result != ResultOK || o.d.Attempts != 2 {
			t.Fatalf("retry %+v", o)
		}
	}
	g.none()
	for _, id := range ids {
		if c := rc.deliveredCount(id); c != 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
	if rc.count() != 2*n {
		t.Fatalf("%d requests, want %d", rc.count(), 2*n)
	}
	g.empty()
}

func TestReloadTakesEffectAtTheNextAttempt(t *testing.T) {
	old := newReceiver(t, func(int, hit) int { return http.StatusInternalServerError })
	g := newRig(t, old.url())
	g.sender(nil)
	id, _ := g.add("payment.completed", start)
	g.expect(ResultFailed, id)

	// SIGHUP: a new URL and secret.
	fresh := newReceiver(t, nil)
	newSecret := "whsec_rotated"
	fresh.secret.Store(&newSecret)
	g.setEndpoint(fresh.url(), newSecret)
	g.clk.Advance(5 * time.Second)
	g.expect(ResultOK, id)
	if hits := fresh.all(); len(hits) != 1 || !hits[0].SigOK || hits[0].EventID != id {
		t.Fatalf("new endpoint got %+v", hits)
	}
	if old.count() != 1 {
		t.Fatalf("old endpoint got %d requests", old.count())
	}
	g.empty()
}

func TestMerchantWithoutURLKeepsItsQueueUntilOneIsSet(t *testing.T) {
	rc := newReceiver(t, nil)
	g := newRig(t, "")
	id, _ := g.add("payment.completed", start) // queued while it had a URL
	s := g.sender(nil)                         // started for the queued event
	o := g.expect(ResultFailed, id)
	if !strings.Contains(o.d.LastError, "webhook_url") {
		t.Fatalf("failure %+v", o.d)
	}
	g.setEndpoint(rc.url(), secret)
	if err := s.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.clk.Advance(5 * time.Second)
	g.expect(ResultOK, id)
	g.empty()
}

func TestStatusAndOpsEndpoint(t *testing.T) {
	rc := newReceiver(t, func(n int, h hit) int {
		if h.Type == "refund.completed" {
			return http.StatusTeapot
		}
		return http.StatusOK
	})
	g := newRig(t, rc.url()+"?token=abc")
	s := g.sender(nil)
	okID, _ := g.add("payment.completed", start)
	g.expect(ResultOK, okID)
	failID, _ := g.add("refund.completed", start)
	g.expect(ResultFailed, failID)

	srv := httptest.NewServer(s.OpsHandler(func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer ops" }))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var eb struct{ Error struct{ Code string } }
	_ = json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if resp.StatusCode != 401 || eb.Error.Code != "unauthorized" {
		t.Fatalf("without the token: %d %+v", resp.StatusCode, eb)
	}

	req, _ := http.NewRequest("GET", srv.URL+"?merchantId=m1", nil)
	req.Header.Set("Authorization", "Bearer ops")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Data []MerchantStatus }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if len(body.Data) != 1 {
		t.Fatalf("data = %+v", body.Data)
	}
	st := body.Data[0]
	if st.MerchantID != merchant || st.Endpoint != rc.url() || st.Pending != 1 || st.SucceededLast24h != 1 ||
		st.LastSuccessAt == nil || !st.LastSuccessAt.Equal(start) || len(st.Deliveries) != 1 {
		t.Fatalf("status = %+v", st)
	}
	d := st.Deliveries[0]
	if d.EventID != failID || d.Type != "refund.completed" || d.TransactionID != "txn_"+failID[4:] || d.Attempts != 1 ||
		d.LastStatusCode != http.StatusTeapot || !d.NextAttemptAt.Equal(start.Add(5*time.Second)) || d.LastAttemptAt == nil {
		t.Fatalf("delivery = %+v", d)
	}
	g.clean()
}

func TestSweepRemovesLongDeadConsumers(t *testing.T) {
	if redistest.Real() {
		t.Skip("needs miniredis's settable clock for consumer idle times")
	}
	rc := newReceiver(t, nil)
	g := newRig(t, rc.url())
	g.sender(nil) // node-a
	id, body := g.add("payment.completed", start)
	g.expect(ResultOK, id) // node-a has read

	// gone-node reads an entry, finishes it, and is never seen again.
	ctx := context.Background()
	stream := g.ks.Webhooks(merchant)
	var read *redis.XStreamSliceCmd
	_, err := g.r.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"m", bytes.Replace(body, []byte(id), []byte("evt_gone"), 1)}})
		read = p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: DefaultGroup, Consumer: "gone-node", Streams: []string{stream, ">"}, Block: -1})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	entry := read.Val()[0].Messages[0].ID
	// (miniredis keeps a consumer's last-seen time only on XCLAIM.)
	g.r.Client.XClaimJustID(ctx, &redis.XClaimArgs{Stream: stream, Group: DefaultGroup, Consumer: "gone-node", Messages: []string{entry}})
	g.r.Client.XAck(ctx, stream, DefaultGroup, entry)
	g.r.Client.XDel(ctx, stream, entry)
	consumers := func() []string {
		cs, err := g.r.Client.XInfoConsumers(ctx, stream, DefaultGroup).Result()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range cs {
			names = append(names, c.Name)
		}
		return names
	}
	if got := consumers(); len(got) != 2 {
		t.Fatalf("consumers %v, want gone-node and node-a", got)
	}
	g.r.Mini.SetTime(time.Now().Add(25 * time.Hour))
	g.clk.Advance(10 * time.Minute) // the sweep
	if got := consumers(); len(got) != 1 || got[0] != "node-a" {
		t.Fatalf("consumers %v, want [node-a]", got)
	}
}
