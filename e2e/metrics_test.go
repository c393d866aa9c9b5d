package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/termhub/termhub/internal/apptest/kit"
	"github.com/termhub/termhub/protocol"
)

// TestMetricsByName drives a payment, an auto-void, a displacement and a
// replay, then reads /metrics and checks each metric by name and value.
func TestMetricsByName(t *testing.T) {
	e := newEnv(t)
	term := e.terminal("T1")
	// The sale is taken by the terminal before the POS connects, so that
	// the POS's first connection has a message to replay, like its second:
	// otherwise whether its replay (running beside live delivery) or live
	// delivery sends the first message is a race, and so is the count.
	id := e.doTxn(t, "pk1", "POST", "/v1/payments", sale("T1", 1234, "metrics-1"), nil, 201).Transaction.ID
	read(t, term, "startPayment")
	send(t, term, "commandReceived", map[string]any{"transactionId": id})
	kit.Eventually(t, "dispatched", func() bool { return e.get(t, "pk1", id).Status == protocol.StatusDispatched })
	pos := e.pos("pk1")
	statusOf(t, pos, id, protocol.StatusDispatched)
	e.Clock.Advance(181 * time.Second) // TIMED_OUT
	statusOf(t, pos, id, protocol.StatusTimedOut)
	approveWith(t, term, id, "LATE") // auto-void
	statusOf(t, pos, id, protocol.StatusVoided)
	e.pos("pk1") // displaces pos and replays its unacked messages: the second replay

	req, _ := http.NewRequest("GET", e.Srv.URL+"/metrics", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("/metrics without the ops token: %v %v", resp, err)
	}
	req.Header.Set("Authorization", "Bearer "+e.App.Config.OpsToken)
	var body []byte
	scrape := func() bool {
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/metrics: %v %v", resp, err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		// The replay is counted once it has ended, which may be just after
		// the new connection was accepted, and a WebSocket message's
		// duration once its frames are served, which may be just after what
		// it caused was delivered: scrape until both are.
		return regexp.MustCompile(`(?m)^termhub_replays_total 2$`).Match(body) &&
			regexp.MustCompile(`termhub_ws_request_duration_seconds_count\{action="paymentResult",kind="terminal"\}`).Match(body)
	}
	kit.Eventually(t, "replays and paymentResult durations counted", scrape)
	value := func(series string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("metric %s missing from /metrics", series)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	for series, want := range map[string]float64{
		`termhub_transactions_total{status="PENDING"}`:   1,
		`termhub_transactions_total{status="TIMED_OUT"}`: 1,
		`termhub_transactions_total{status="VOIDED"}`:    1,
		`termhub_auto_voids_total`:                       1,
		`termhub_displacements_total{kind="pos"}`:        1,
		`termhub_connections{kind="terminal"}`:           1,
		`termhub_replays_total`:                          2,
	} {
		if got := value(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, series := range []string{`termhub_outbox_depth`, `termhub_grace_timers`, `termhub_deadline_timers`,
		`termhub_key_conflicts_total`, `termhub_replayed_messages_total`, `termhub_webhook_retries_total`} {
		value(series)
	}
	// Nothing was acked: the depth is pk1's whole outbox.
	n, err := e.App.Outbox.Depth(kit.Ctx(t), "m1", "pk1")
	if err != nil || n == 0 || value(`termhub_outbox_depth`) != float64(n) {
		t.Errorf("outbox depth %v, pk1's outbox holds %d (%v)", value(`termhub_outbox_depth`), n, err)
	}
	for _, re := range []string{`termhub_http_request_duration_seconds_count\{`, `termhub_ws_request_duration_seconds_count\{action="paymentResult",kind="terminal"\}`} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("no %s series", re)
		}
	}
}
