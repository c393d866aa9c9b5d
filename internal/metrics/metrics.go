// Package metrics defines termhub's Prometheus metrics in one place. The hub,
// the engine and the webhook sender record into one Metrics; /metrics serves
// its registry. Every name starts with termhub_.
package metrics

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector.
type Metrics struct {
	Registry *prometheus.Registry

	Connections      *prometheus.GaugeVec   // kind: pos, terminal, ops
	Displacements    *prometheus.CounterVec // kind: pos, terminal, session
	KeyConflicts     prometheus.Counter     // fighting-keys displacements (reconnectAllowed:false)
	Transactions     *prometheus.CounterVec // status: transitions into each status
	AutoVoids        prometheus.Counter
	Replays          prometheus.Counter // connections that replayed at least one message
	ReplayedMessages prometheus.Counter
	WebhookDelivered *prometheus.CounterVec // result: ok, failed, gave_up
	WebhookRetries   prometheus.Counter
	HTTPDuration     *prometheus.HistogramVec // route, code
	WSDuration       *prometheus.HistogramVec // kind, action
	RedisUp          prometheus.Gauge         // 1 while Redis answers the hub's probe
	RedisOutages     prometheus.Counter       // times Redis stopped answering
	RedisDataLosses  prometheus.Counter       // times Redis came back without its data
	LostCommits      *prometheus.CounterVec   // outcome: applied, not_applied, overtaken
	AuthFailures     *prometheus.CounterVec   // kind: pos, terminal, ops
	RateLimited      *prometheus.CounterVec   // limit: auth_address, auth_id, api_key, terminal
	Duplicates       prometheus.Counter       // repeated signed POSTs refused (duplicate_request)
}

// New creates and registers every collector, with the Go and process
// collectors, on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "termhub_connections", Help: "Live WebSocket connections by kind.",
		}, []string{"kind"}),
		Displacements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "termhub_displacements_total", Help: "Connections displaced by a newer one of the same API key or device.",
		}, []string{"kind"}),
		KeyConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "termhub_key_conflicts_total", Help: "Displacements of fighting API keys, told not to reconnect.",
		}),
		Transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "termhub_transactions_total", Help: "Transaction status changes, by the status entered.",
		}, []string{"status"}),
		AutoVoids: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "termhub_auto_voids_total", Help: "Late approvals voided automatically.",
		}),
		Replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "termhub_replays_total", Help: "POS connections that were replayed unacknowledged messages.",
		}),
		ReplayedMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "termhub_replayed_messages_total", Help: "Durable POS messages sent again by replay.",
		}),
		WebhookDelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "termhub_webhook_deliveries_total", Help: "Webhook delivery attempts by result.",
		}, []string{"result"}),
		WebhookRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "termhub_webhook_retries_total", Help: "Webhook deliveries scheduled for another attempt.",
		}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "termhub_http_request_duration_seconds", Help: "HTTP request latency by route and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "code"}),
		WSDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "termhub_ws_request_duration_seconds", Help: "Time to serve one WebSocket message by connection kind and action.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"kind", "action"}),
	}
	m.RedisUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "termhub_redis_up", Help: "1 while Redis answers the hub's probe, 0 while requests that need it are answered 503.",
	})
	m.RedisUp.Set(1)
	m.RedisOutages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "termhub_redis_outages_total", Help: "Times Redis stopped answering the hub's probe.",
	})
	m.RedisDataLosses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "termhub_redis_data_losses_total", Help: "Times Redis came back without the data it had (restarted without persistence, or replaced).",
	})
	m.LostCommits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "termhub_lost_commits_total", Help: "Commits whose answer from Redis was lost, by what the hub then found: applied, not_applied or overtaken.",
	}, []string{"outcome"})
	m.AuthFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "termhub_auth_failures_total", Help: "Failed authentications by who tried: pos (an API key), terminal or ops.",
	}, []string{"kind"})
	m.RateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "termhub_rate_limited_total", Help: "Requests and frames refused with rate_limited, by the limit that refused them.",
	}, []string{"limit"})
	m.Duplicates = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "termhub_duplicate_requests_total", Help: "Repeated signed POSTs without an Idempotency-Key refused with duplicate_request.",
	})
	r.MustRegister(m.Connections, m.Displacements, m.KeyConflicts, m.Transactions, m.AutoVoids, m.Replays,
		m.ReplayedMessages, m.WebhookDelivered, m.WebhookRetries, m.HTTPDuration, m.WSDuration,
		m.RedisUp, m.RedisOutages, m.RedisDataLosses, m.LostCommits, m.AuthFailures, m.RateLimited, m.Duplicates,
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(gcFloorInputs)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// gcFloorInputs adds to the Go collector's default series what the heap
// goal is computed from (internal/gcfloor): the live heap the last cycle
// left and the stacks and globals it scanned, exported as
// go_gc_heap_live_bytes, go_gc_scan_stack_bytes and go_gc_scan_globals_bytes.
// With go_gc_gogc_percent they give the goal GOGC alone sets, which
// go_memstats_next_gc_bytes (capped by the memory limit) does not show.
var gcFloorInputs = collectors.GoRuntimeMetricsRule{
	Matcher: regexp.MustCompile(`^/gc/(heap/live|scan/stack|scan/globals):bytes$`),
}

// GaugeFunc registers a gauge computed at scrape time (outbox depth, grace
// timers running).
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}
