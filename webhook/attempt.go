package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Request headers of a webhook POST (docs/webhooks.md).
const (
	HeaderSignature = "Termhub-Signature"
	HeaderEventID   = "Termhub-Event-Id"
)

// Results of an attempt (the WebhookDelivered label): "ok" delivered,
// "failed" failed and retried later, "gave_up" failed for the last time.
const (
	ResultOK     = "ok"
	ResultFailed = "failed"
	ResultGaveUp = "gave_up"
)

// Delivery is the state of one undelivered event, as stored in Redis and
// shown to ops.
type Delivery struct {
	EventID        string     `json:"eventId"`
	Type           string     `json:"type"`
	TransactionID  string     `json:"transactionId"`
	CreatedAt      time.Time  `json:"createdAt"`
	Attempts       int        `json:"attempts"`
	LastStatusCode int        `json:"lastStatusCode,omitempty"` // the receiver's answer, 0 for none
	LastError      string     `json:"lastError,omitempty"`      // why the last attempt failed when not a status code
	LastAttemptAt  *time.Time `json:"lastAttemptAt"`
	NextAttemptAt  time.Time  `json:"nextAttemptAt"`
}

// eventHead is what the sender reads of an event; the body itself is sent
// exactly as stored.
type eventHead struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"createdAt"`
	Data      struct {
		Transaction struct {
			ID string `json:"id"`
		} `json:"transaction"`
	} `json:"data"`
}

// newState reads a stream entry's event into a fresh Delivery.
func newState(streamID, body string) Delivery {
	var h eventHead
	_ = json.Unmarshal([]byte(body), &h)
	d := Delivery{EventID: h.ID, Type: h.Type, TransactionID: h.Data.Transaction.ID, CreatedAt: h.CreatedAt.UTC()}
	if d.CreatedAt.IsZero() {
		// The stream id starts with the Redis time of the XADD in ms.
		ms, _, _ := strings.Cut(streamID, "-")
		if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
			d.CreatedAt = time.UnixMilli(n).UTC()
		}
	}
	return d
}

var errNoEndpoint = errors.New("the merchant has no webhook_url configured")

// attempt delivers one entry the pass has taken (leased) and records the
// outcome: delivered, retried later, or given up.
func (w *worker) attempt(id string) {
	s := w.s
	ctx := s.ctx
	pipe := s.rdb.Pipeline()
	xr := pipe.XRange(ctx, w.stream, id, id)
	sg := pipe.HGet(ctx, w.state, id)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil {
			// The lease runs out and the entry is due again then.
			s.log.Error().Err(err).Str("merchantId", w.m).Str("entry", id).Msg("loading a webhook delivery failed")
		}
		return
	}
	var body string
	if msgs := xr.Val(); len(msgs) > 0 {
		body, _ = msgs[0].Values[streamField].(string)
	}
	if body == "" {
		_ = w.forget(ctx, id) // delivered and deleted meanwhile (or never an event)
		return
	}
	d := newState(id, body)
	if b, err := sg.Bytes(); err == nil {
		var prev Delivery
		if json.Unmarshal(b, &prev) == nil {
			d.Attempts, d.LastStatusCode, d.LastError, d.LastAttemptAt, d.NextAttemptAt =
				prev.Attempts, prev.LastStatusCode, prev.LastError, prev.LastAttemptAt, prev.NextAttemptAt
		}
	}
	if d.EventID == "" {
		s.log.Error().Str("merchantId", w.m).Str("entry", id).Msg("unreadable webhook event dropped")
		w.done(ctx, id, d, ResultGaveUp)
		return
	}

	target, secret := s.endpoint(w.m)
	now := s.clock.Now().UTC()
	code, err := 0, error(nil)
	if target == "" || secret == "" {
		err = errNoEndpoint
	} else {
		code, err = s.post(ctx, target, secret, d.EventID, []byte(body), now)
	}
	if err != nil && ctx.Err() != nil {
		// Closing cut the attempt short: it does not count. Leave the entry
		// due at its scheduled time instead of waiting for the lease.
		w.release(id, d.NextAttemptAt)
		return
	}
	// A real attempt: record its outcome even if Close comes meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	d.Attempts++
	d.LastAttemptAt = &now
	d.LastStatusCode, d.LastError = code, ""
	if err == nil && code >= 200 && code < 300 {
		w.done(ctx, id, d, ResultOK)
		return
	}
	switch {
	case err != nil:
		d.LastError = describe(err, s.opts.Timeout)
	case code >= 300 && code < 400:
		d.LastError = "redirect not followed"
	}
	next := time.UnixMilli(now.Add(s.backoff(d.Attempts)).UnixMilli()).UTC()
	if next.After(d.CreatedAt.Add(s.opts.MaxAge)) {
		w.done(ctx, id, d, ResultGaveUp)
		return
	}
	d.NextAttemptAt = next
	// Arm first: once the retry is visible in Redis its timer is running.
	w.armAt(next)
	data, _ := json.Marshal(d)
	ok, rerr := rescheduleScript.Run(ctx, s.rdb, []string{w.retry, w.state}, id, next.UnixMilli(), data).Bool()
	if rerr != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(rerr).Str("merchantId", w.m).Str("eventId", d.EventID).Msg("storing a webhook retry failed")
		}
		return // the lease runs out and the entry is due again then
	}
	if !ok {
		return // finished by another hub meanwhile
	}
	if m := s.opts.Metrics; m != nil {
		m.WebhookDelivered.WithLabelValues(ResultFailed).Inc()
		m.WebhookRetries.Inc()
	}
	ev := s.log.Info()
	if code != 0 {
		ev = ev.Int("statusCode", code)
	}
	if d.LastError != "" {
		ev = ev.Str("error", d.LastError)
	}
	ev.Str("merchantId", w.m).Str("eventId", d.EventID).Str("eventType", d.Type).Str("transactionId", d.TransactionID).
		Str("endpoint", host(target)).Int("attempt", d.Attempts).Time("nextAttemptAt", next).Msg("webhook delivery failed; will retry")
	s.notify(w.m, d, ResultFailed)
}

// done removes a delivered or given-up entry everywhere (acknowledged and
// deleted from the stream) and records it.
func (w *worker) done(ctx context.Context, id string, d Delivery, result string) {
	s := w.s
	now := s.clock.Now().UTC()
	field, last := "", ""
	switch result {
	case ResultOK:
		field, last = statsField("ok", now), "last_ok"
	case ResultGaveUp:
		field, last = statsField("gave_up", now), "last_gave_up"
	}
	removed, err := finishScript.Run(ctx, s.rdb, []string{w.stream, w.retry, w.state, w.stats},
		s.opts.Group, id, field, last, now.UnixMilli()).Bool()
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Str("merchantId", w.m).Str("eventId", d.EventID).Msg("recording a webhook outcome failed")
		}
		return // due again when the lease runs out: at least once
	}
	if !removed {
		return // another hub finished it meanwhile
	}
	if m := s.opts.Metrics; m != nil {
		m.WebhookDelivered.WithLabelValues(result).Inc()
	}
	switch result {
	case ResultOK:
		s.log.Debug().Str("merchantId", w.m).Str("eventId", d.EventID).Str("eventType", d.Type).
			Str("transactionId", d.TransactionID).Int("attempts", d.Attempts).Msg("webhook delivered")
	case ResultGaveUp:
		ev := s.log.Warn()
		if d.LastStatusCode != 0 {
			ev = ev.Int("statusCode", d.LastStatusCode)
		}
		if d.LastError != "" {
			ev = ev.Str("error", d.LastError)
		}
		ev.Str("merchantId", w.m).Str("eventId", d.EventID).Str("eventType", d.Type).Str("transactionId", d.TransactionID).
			Int("attempts", d.Attempts).Time("createdAt", d.CreatedAt).Msg("webhook delivery given up")
	}
	s.notify(w.m, d, result)
}

// forget removes an entry that has nothing left to deliver, unrecorded.
func (w *worker) forget(ctx context.Context, id string) error {
	return finishScript.Run(ctx, w.s.rdb, []string{w.stream, w.retry, w.state, w.stats}, w.s.opts.Group, id, "", "", 0).Err()
}

// release gives back an entry taken by an attempt that Close interrupted.
func (w *worker) release(id string, at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if at.IsZero() {
		at = w.s.clock.Now()
	}
	_ = w.s.rdb.ZAddXX(ctx, w.retry, redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err()
}

func (s *Sender) notify(m string, d Delivery, result string) {
	if s.opts.onAttempt != nil {
		s.opts.onAttempt(m, d, result)
	}
}

// post sends one attempt and returns the receiver's status code.
func (s *Sender) post(ctx context.Context, target, secret, eventID string, body []byte, now time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "termhub-webhooks/1")
	req.Header.Set(HeaderEventID, eventID)
	req.Header.Set(HeaderSignature, Sign(secret, now, body))
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// Sign returns the Termhub-Signature header value of body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a Termhub-Signature header against body and secret, and
// that its timestamp is within tolerance of now (no check when tolerance
// is 0). It is what a receiver written in Go does (see docs/webhooks.md).
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return errors.New("webhook: malformed signature header")
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return errors.New("webhook: signature timestamp outside the tolerance")
		}
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("webhook: signature mismatch")
}

// Backoff is the delay before retry n (n ≥ 1 failed attempts so far): base
// doubled n-1 times, capped at max, then moved by up to ±jitter of itself
// (r uniform in [0,1); r = 0.5 means no jitter). A jittered delay never
// exceeds max: above it, it is folded back below.
func Backoff(base, max time.Duration, jitter float64, n int, r float64) time.Duration {
	d := max
	if n < 1 {
		n = 1
	}
	if sh := uint(n - 1); sh < 63 {
		if x := base << sh; x > 0 && x>>sh == base && x < max {
			d = x
		}
	}
	d += time.Duration(float64(d) * jitter * (2*r - 1))
	if d > max {
		d = max - (d - max)
	}
	return d
}

func (s *Sender) backoff(n int) time.Duration {
	return Backoff(s.opts.RetryBase, s.opts.MaxDelay, s.opts.Jitter, n, s.opts.Rand())
}

// describe says why an attempt failed without the URL (which may carry
// credentials) and never with the body.
func describe(err error, timeout time.Duration) string {
	if errors.Is(err, errNoEndpoint) {
		return err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout: no answer within %s", timeout)
	}
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return msg
}

// host is the host of a webhook URL, for logs (never the path or query,
// which may carry a token).
func host(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		return ""
	}
	return u.Host
}

// statsField is the hourly counter of outcome at t.
func statsField(outcome string, t time.Time) string {
	return outcome + ":" + strconv.FormatInt(t.Unix()/3600, 10)
}
