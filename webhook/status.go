package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/protocol"
)

// MerchantStatus is one merchant's webhook deliveries, for ops.
type MerchantStatus struct {
	MerchantID string `json:"merchantId"`
	// Endpoint is webhook_url without credentials or query ("" for none).
	Endpoint string `json:"endpoint"`
	// Pending counts the events not delivered yet (new or failing).
	Pending int64 `json:"pending"`
	// SucceededLast24h and GaveUpLast24h count outcomes in the current and
	// the 23 previous clock hours.
	SucceededLast24h int64      `json:"succeededLast24h"`
	GaveUpLast24h    int64      `json:"gaveUpLast24h"`
	LastSuccessAt    *time.Time `json:"lastSuccessAt"`
	// Deliveries are the pending events, soonest next attempt first (at most
	// the limit asked for). Attempts 0 means not tried yet.
	Deliveries []Delivery `json:"deliveries"`
}

// DefaultStatusLimit is how many deliveries Status lists per merchant.
const DefaultStatusLimit = 100

// Status returns, for every merchant with a webhook_url or with deliveries
// queued, its pending and failing deliveries (at most limit of them) and its
// recent outcomes.
func (s *Sender) Status(ctx context.Context, limit int) ([]MerchantStatus, error) {
	if limit <= 0 {
		limit = DefaultStatusLimit
	}
	dir := s.opts.Directory()
	ids := map[string]bool{}
	for m := range s.merchants() {
		ids[m] = true
	}
	for _, m := range dir.MerchantIDs() {
		if mc, ok := dir.Merchant(m); ok && mc.WebhookURL != "" {
			ids[m] = true
		}
	}
	out := make([]MerchantStatus, 0, len(ids))
	for m := range ids {
		st, err := s.merchantStatus(ctx, m, limit)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b MerchantStatus) int { return strings.Compare(a.MerchantID, b.MerchantID) })
	return out, nil
}

func (s *Sender) merchantStatus(ctx context.Context, m string, limit int) (MerchantStatus, error) {
	ks := s.opts.Keys
	target, _ := s.endpoint(m)
	st := MerchantStatus{MerchantID: m, Endpoint: redact(target), Deliveries: []Delivery{}}
	pipe := s.rdb.Pipeline()
	card := pipe.ZCard(ctx, ks.WebhookRetry(m))
	zs := pipe.ZRangeWithScores(ctx, ks.WebhookRetry(m), 0, int64(limit-1))
	stats := pipe.HGetAll(ctx, ks.WebhookStats(m))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return st, err
	}
	st.Pending = card.Val()
	now := s.clock.Now().UTC()
	hour := now.Unix() / 3600
	for f, v := range stats.Val() {
		n, _ := strconv.ParseInt(v, 10, 64)
		kind, h, _ := strings.Cut(f, ":")
		if f == "last_ok" {
			t := time.UnixMilli(n).UTC()
			st.LastSuccessAt = &t
			continue
		}
		hh, err := strconv.ParseInt(h, 10, 64)
		if err != nil || hh <= hour-24 || hh > hour {
			continue
		}
		switch kind {
		case "ok":
			st.SucceededLast24h += n
		case "gave_up":
			st.GaveUpLast24h += n
		}
	}
	entries := zs.Val()
	if len(entries) == 0 {
		return st, nil
	}
	members := make([]string, len(entries))
	for i, z := range entries {
		members[i], _ = z.Member.(string)
	}
	states, err := s.rdb.HMGet(ctx, ks.WebhookState(m), members...).Result()
	if err != nil {
		return st, err
	}
	for i, z := range entries {
		var d Delivery
		if raw, ok := states[i].(string); ok {
			_ = json.Unmarshal([]byte(raw), &d)
		}
		if d.NextAttemptAt.IsZero() {
			d.NextAttemptAt = time.UnixMilli(int64(z.Score)).UTC()
		}
		st.Deliveries = append(st.Deliveries, d)
	}
	return st, nil
}

// pruneStats drops hourly counters older than two days.
func (w *worker) pruneStats(ctx context.Context) {
	fields, err := w.s.rdb.HKeys(ctx, w.stats).Result()
	if err != nil {
		return
	}
	hour := w.s.clock.Now().Unix() / 3600
	var old []string
	for _, f := range fields {
		_, h, ok := strings.Cut(f, ":")
		if n, err := strconv.ParseInt(h, 10, 64); ok && err == nil && n < hour-48 {
			old = append(old, f)
		}
	}
	if len(old) > 0 {
		_ = w.s.rdb.HDel(ctx, w.stats, old...).Err()
	}
}

// OpsHandler serves GET /v1/ops/webhooks: {"data":[MerchantStatus...]},
// optionally for one merchant (?merchantId=) and with ?limit= deliveries per
// merchant (default 100, at most 1000). authorized checks the ops token;
// without it the answer is 401 unauthorized.
func (s *Sender) OpsHandler(authorized func(r *http.Request) bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if authorized == nil || !authorized(r) {
			writeJSON(w, http.StatusUnauthorized, protocol.ErrorBody{Error: protocol.Errorf(protocol.CodeUnauthorized, "Authorization", "missing or wrong ops token")})
			return
		}
		limit := DefaultStatusLimit
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				writeJSON(w, http.StatusBadRequest, protocol.ErrorBody{Error: protocol.Invalid("limit", "must be an integer from 1 to 1000")})
				return
			}
			limit = n
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		all, err := s.Status(ctx, limit)
		if err != nil {
			s.log.Error().Err(err).Msg("reading webhook status failed")
			writeJSON(w, http.StatusServiceUnavailable, protocol.ErrorBody{Error: protocol.Errorf(protocol.CodeUnavailable, "", "webhook status unavailable")})
			return
		}
		if m := r.URL.Query().Get("merchantId"); m != "" {
			all = slices.DeleteFunc(all, func(st MerchantStatus) bool { return st.MerchantID != m })
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": all})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// redact returns a webhook URL without credentials, query or fragment.
func redact(target string) string {
	if target == "" {
		return ""
	}
	u, err := url.Parse(target)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
