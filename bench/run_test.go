package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/redistest"
)

// inProcess launches hubs and floor relays inside the test, on the test's
// Redis (miniredis, or REDIS_URL when set).
type inProcess struct {
	t     *testing.T
	fleet Fleet
	r     *redistest.Redis
}

func (l *inProcess) Hub(ctx context.Context, name string, profile bool) (Endpoint, func(), error) {
	prefix := l.r.Prefix + name + ":"
	cfg, err := config.Parse(l.fleet.ConfigYAML("127.0.0.1:0", "", prefix, "info"), func(string) string { return "" })
	if err != nil {
		return Endpoint{}, nil, err
	}
	a := app.New(cfg, l.r.Client, nil, zerolog.Nop())
	if err := a.Start(ctx); err != nil {
		return Endpoint{}, nil, err
	}
	srv := httptest.NewServer(a.Handler())
	// The token lets the bench read /metrics; in this process its
	// allocation figures are the test's as much as the hub's.
	return Endpoint{Name: "hub", URL: srv.URL, Fleet: l.fleet, OpsToken: opsToken(prefix)}, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Drain(dctx)
		srv.Close()
	}, nil
}

func (l *inProcess) Floor(ctx context.Context, name string, profile bool) (Endpoint, func(), error) {
	srv := httptest.NewServer(NewFloor(l.r.Client, l.r.Prefix+name+":").Handler())
	return Endpoint{Name: "floor", URL: srv.URL, Fleet: l.fleet}, srv.Close, nil
}

// TestRunSmall runs the latency, floor, throughput and replay scenarios at
// a tiny size against an in-process hub and floor, and checks that the
// figures are sane and that every payment got exactly one final. It asserts
// nothing about how fast anything is.
func TestRunSmall(t *testing.T) {
	l := &inProcess{t: t, fleet: GenerateFleet(2, 4), r: redistest.New(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var log bytes.Buffer
	res := Run(ctx, Options{
		Scenarios: map[string]bool{"latency": true, "floor": true, "throughput": true, "load": true, "replay": true},
		Payments:  20, Warmup: 2, Duration: 600 * time.Millisecond, LoadRounds: 3, Rate: 20, POS: 2, Terminals: 6, Replay: 30,
		Drain: 10 * time.Second, Settle: -1, Log: &log,
	}, l)
	if len(res.Errors) > 0 {
		t.Fatalf("errors: %v\n%s", res.Errors, log.String())
	}
	for _, s := range []*PaymentStats{res.Latency, res.Floor} {
		if s == nil {
			t.Fatalf("a sequential scenario has no result:\n%s", log.String())
		}
		if s.Sent != 20 || s.Completed != 20 || s.Failures != 0 || s.Lost != 0 || s.Duplicated != 0 || s.Unfinished {
			t.Errorf("%s: want 20 payments with exactly one COMPLETED final each, got %+v", s.Target, *s)
		}
		rt := s.RoundTrip
		if rt.N != 20 || rt.P50 <= 0 || rt.P50 > rt.P99 || rt.P99 > rt.Max || s.Rate <= 0 {
			t.Errorf("%s: insane round trip %+v, rate %.1f", s.Target, rt, s.Rate)
		}
	}
	for _, s := range []*PaymentStats{res.Throughput, res.ThroughputFloor} {
		if s == nil {
			t.Fatalf("throughput has no result:\n%s", log.String())
		}
		if s.Completed == 0 || s.Completed != s.Sent || s.Lost != 0 || s.Duplicated != 0 || s.Unfinished || s.Terminals != 6 || s.POS != 2 {
			t.Errorf("%s throughput: %+v", s.Target, *s)
		}
		if s.RoundTrip.N != s.Completed || s.Rate <= 0 {
			t.Errorf("%s throughput: %d round trips for %d finals, rate %.1f", s.Target, s.RoundTrip.N, s.Completed, s.Rate)
		}
		checkSteps(t, s)
		if s.Late.N != 0 || s.Bursts != (Bursts{}) {
			t.Errorf("%s throughput: a closed loop has no lateness or bursts, got %+v and %+v", s.Target, s.Late, s.Bursts)
		}
	}
	for _, s := range []*PaymentStats{res.Load, res.LoadFloor} {
		if s == nil {
			t.Fatalf("load has no result:\n%s", log.String())
		}
		// 20/s for 3 blocks of 200 ms: 4 payments a block.
		if s.Sent != 12 || s.Completed+s.Failures != s.Sent || s.Lost != 0 || s.Duplicated != 0 || s.Unfinished || s.Offered != 20 {
			t.Errorf("%s load: want 12 payments offered in 3 blocks, each with one final; got %+v", s.Target, *s)
		}
		checkSteps(t, s)
		if s.Late.N != s.Sent {
			t.Errorf("%s load: lateness of %d payments, want all %d", s.Target, s.Late.N, s.Sent)
		}
		// 4 payments a block, 50 ms apart (150 ms from the first to the
		// last), so each block's payments fall in 2 or 3 windows of 100 ms,
		// and the three blocks, the other server's turn between them, in 6
		// to 9.
		if b := s.Bursts; b.Slow < 1 || b.Of < 6 || b.Of > 9 || b.Windows < 1 || b.Windows > b.Of || b.Busiest < 1 || b.Busiest > b.Slow {
			t.Errorf("%s load: bursts %+v", s.Target, b)
		}
	}
	if res.LoadRounds != 3 {
		t.Errorf("throughput and load took turns in %d blocks, want 3", res.LoadRounds)
	}
	if res.Interleaved != 20 {
		t.Errorf("latency and floor ran in %d interleaved rounds, want 20 (the default, one payment each)", res.Interleaved)
	}
	if p := res.Replay; p == nil || p.Messages != 30 || p.Received != 30 || p.Duplicates != 0 || p.FromDial <= 0 {
		t.Errorf("replay: %+v", p)
	}
	if !res.LatencyCPU.AllocKnown || res.LatencyCPU.AllocPerPayment(res.Latency) <= 0 || res.FloorSeqCPU.AllocKnown {
		t.Errorf("allocation figures: hub %+v, floor %+v; want the hub's read from /metrics and none for the floor", res.LatencyCPU, res.FloorSeqCPU)
	}
	if res.CPUModel != CPUModel() {
		t.Errorf("the run's processor %q, want this machine's %q", res.CPUModel, CPUModel())
	}
	var out strings.Builder
	res.Markdown(&out)
	for _, want := range []string{"| 1 latency | hub round trip | p50 ", "| 2 floor | floor round trip |", "hub ÷ floor, p50", "hub ÷ floor, p99",
		"| 3 throughput | hub finals: lost / duplicated | 0 / 0 (", "| 1 latency | hub heap allocated per payment | ", "| 3 throughput | hub heap allocated per payment | ",
		"| 3 throughput | how | both servers up at once, taking turns in 3 blocks of 200ms each", "| 3b load | how | both servers up at once, taking turns in 3 blocks", "| 5 replay |",
		"| 3 throughput | hub steps | to the paymentResponse p50 ", "| 3 throughput | floor steps | to the paymentResponse p50 ",
		"| 3b load | hub steps | to the paymentResponse p50 ", "; written late by the load generator p50 ", "| 3b load | floor slowest 1 % | ", " windows of 100 ms; the busiest held "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "not comparable") {
		t.Errorf("report marks figures not comparable without being told to:\n%s", out.String())
	}
}

// checkSteps: every final of s was split at its paymentResponse, and
// neither step is longer than the longest round trip that holds it.
func checkSteps(t *testing.T, s *PaymentStats) {
	t.Helper()
	a, f := s.Accept, s.Finish
	if a.N != s.RoundTrip.N || f.N != s.RoundTrip.N || a.P50 <= 0 || f.P50 <= 0 || a.Max > s.RoundTrip.Max || f.Max > s.RoundTrip.Max {
		t.Errorf("%s: steps %+v and %+v for the round trips %+v", s.Target, a, f, s.RoundTrip)
	}
}

// TestFindBursts: the payments at or over the p99 are counted by the
// windows they fell in, whether gathered in one or spread out.
func TestFindBursts(t *testing.T) {
	// 980 fast payments, distinct, 10 ms apart (98 windows of 100 ms), and
	// 20 slow ones among them: the p99 (the 990th of 1,000) is the 10th
	// slow one, so 11 are at or over it.
	build := func(slowAt func(k int) int64) []timedSample {
		var s []timedSample
		for i := range 980 {
			s = append(s, timedSample{at: int64(i) * int64(10*time.Millisecond), d: time.Duration(i) * time.Microsecond})
		}
		for k := range 20 {
			s = append(s, timedSample{at: slowAt(k), d: 50*time.Millisecond + time.Duration(k)})
		}
		return s
	}
	bursts := func(s []timedSample) Bursts {
		st := PaymentStats{Offered: 100, timed: s}
		st.summarize()
		return st.Bursts
	}
	burst := bursts(build(func(k int) int64 { return int64(4200*time.Millisecond) + int64(k) }))
	if want := (Bursts{Slow: 11, Windows: 1, Of: 98, Busiest: 11}); burst != want {
		t.Errorf("one burst: %+v, want %+v", burst, want)
	}
	// The slow ones one every 5 windows: the 11 slowest (k = 9..19) in 11.
	spread := bursts(build(func(k int) int64 { return int64(k) * int64(500*time.Millisecond) }))
	if want := (Bursts{Slow: 11, Windows: 11, Of: 98, Busiest: 1}); spread != want {
		t.Errorf("spread: %+v, want %+v", spread, want)
	}
	if got := bursts(nil); got != (Bursts{}) || got.String() != "no samples" {
		t.Errorf("no samples: %+v %q", got, got.String())
	}
	if got, want := burst.String(), "11 at or over the p99, in 1 of 98 windows of 100 ms; the busiest held 11"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestMergeStats: phases against one target add up to one figure whose
// percentiles are those of all the samples.
func TestMergeStats(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	// Payments 1 s apart, from second from on.
	timed := func(from int, d []time.Duration) []timedSample {
		var s []timedSample
		for i, x := range d {
			s = append(s, timedSample{at: int64(from+i) * int64(time.Second), d: x})
		}
		return s
	}
	a := PaymentStats{Target: "hub", POS: 1, Terminals: 1, Sent: 3, Completed: 3, Counted: 3, Elapsed: time.Second, Errors: map[string]int{}, timed: timed(0, ms(1, 2, 3)),
		accept: ms(1, 1, 2), finish: ms(0, 1, 1), late: ms(0, 0, 1), Offered: 3}
	// b's last final came in its drain, after the window its rate counts.
	b := PaymentStats{Target: "hub", POS: 1, Terminals: 1, Sent: 4, Completed: 3, Failures: 1, Counted: 3, Elapsed: 2 * time.Second,
		Errors: map[string]int{"device_busy": 1}, timed: timed(3, ms(10, 20, 30)), accept: ms(5, 10, 20), finish: ms(5, 10, 10), late: ms(0, 1, 2), Offered: 3}
	m := mergeStats([]PaymentStats{a, b})
	if m.Sent != 7 || m.Completed != 6 || m.Failures != 1 || m.Errors["device_busy"] != 1 || m.Elapsed != 3*time.Second {
		t.Fatalf("counts: %+v", m)
	}
	if m.Rate != 2 { // 6 finals inside the windows, which last 3 s
		t.Errorf("rate %.2f, want 2", m.Rate)
	}
	if m.RoundTrip.N != 6 || m.RoundTrip.P50 != 3*time.Millisecond || m.RoundTrip.Max != 30*time.Millisecond {
		t.Errorf("round trip %+v, want the percentiles of all six samples", m.RoundTrip)
	}
	if m.Accept.N != 6 || m.Accept.Max != 20*time.Millisecond || m.Finish.N != 6 || m.Finish.P50 != time.Millisecond || m.Late.N != 6 || m.Late.Max != 2*time.Millisecond {
		t.Errorf("steps %+v, %+v, %+v: want those of all six payments", m.Accept, m.Finish, m.Late)
	}
	// The p99 of the six is the 30 ms one: one slow payment, in one of six windows.
	if want := (Bursts{Slow: 1, Windows: 1, Of: 6, Busiest: 1}); m.Bursts != want {
		t.Errorf("bursts %+v, want %+v", m.Bursts, want)
	}
	var acc cpuAcc
	t0 := time.Now()
	acc.add(cpuSample{at: t0, serverOK: true}, cpuSample{at: t0.Add(time.Second), server: 500 * time.Millisecond, serverOK: true})
	acc.add(cpuSample{at: t0, serverOK: true}, cpuSample{at: t0.Add(3 * time.Second), server: 2500 * time.Millisecond, serverOK: true})
	c := acc.share()
	if !c.Known || c.Server != 0.75 || c.Wall != 4*time.Second { // 3 s of CPU in 4 s
		t.Errorf("cpu share %+v, want 0.75 cores of server over 4 s", c)
	}
	// Per payment counts every final, those of the drains too: 3 s for 7.
	if got, want := c.PerPayment(&m), 3*time.Second/7; got != want {
		t.Errorf("CPU per payment %s, want %s", got, want)
	}
}

func TestEmbeddedMark(t *testing.T) {
	r := &Results{Options: Options{Embedded: true}, Latency: &PaymentStats{Target: "hub"}}
	var out strings.Builder
	r.Markdown(&out)
	if !strings.Contains(out.String(), "(embedded Redis: not comparable)") {
		t.Fatalf("embedded run not marked:\n%s", out.String())
	}
}

// The report says which processor the run had: the first "model name" of
// /proc/cpuinfo, none when there is no such line.
func TestCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Other\n"
	if got, want := cpuModel([]byte(info)), "Intel(R) Xeon(R) Processor"; got != want {
		t.Errorf("cpuModel = %q, want %q", got, want)
	}
	if got := cpuModel([]byte("processor\t: 0\nBogoMIPS\t: 50.00\n")); got != "" {
		t.Errorf("cpuModel without a model name = %q, want none", got)
	}
	for model, want := range map[string]string{
		"Intel(R) Xeon(R) Processor": fmt.Sprintf("%d cores (Intel(R) Xeon(R) Processor), load average", runtime.NumCPU()),
		"":                           fmt.Sprintf("%d cores, load average", runtime.NumCPU()), // unnamed: no empty brackets
	} {
		var out strings.Builder
		(&Results{CPUModel: model}).Markdown(&out)
		if !strings.Contains(out.String(), want) {
			t.Errorf("report header for the processor %q lacks %q:\n%s", model, want, out.String())
		}
	}
}

func TestPercentile(t *testing.T) {
	d := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x)
		}
		return out
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100 - i) // unsorted on purpose: Summarize sorts
	}
	s := Summarize(hundred)
	if s.N != 100 || s.P50 != 50 || s.P99 != 99 || s.Max != 100 {
		t.Errorf("Summarize(1..100) = %+v", s)
	}
	if got := Summarize(d(7)); got.P50 != 7 || got.P99 != 7 || got.Max != 7 {
		t.Errorf("one sample: %+v", got)
	}
	if got := Percentile(d(1, 2, 3, 4), 0.5); got != 2 {
		t.Errorf("p50 of 1..4 = %v", got)
	}
}

func TestPlan(t *testing.T) {
	f := GenerateFleet(3, 5)
	plans, err := f.Plan(3, 9)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, p := range plans {
		if len(p.Terminals) != 3 {
			t.Errorf("POS %d drives %d terminals, want 3", i, len(p.Terminals))
		}
		m := strings.TrimPrefix(p.Key.ID, "bk")
		for _, term := range p.Terminals {
			if !strings.HasPrefix(term.ID, "bt"+m+"-") {
				t.Errorf("POS %s drives %s of another merchant", p.Key.ID, term.ID)
			}
			if seen[term.ID] {
				t.Errorf("%s driven twice", term.ID)
			}
			seen[term.ID] = true
		}
	}
	if _, err := f.Plan(4, 1); err == nil {
		t.Error("4 POS from 3 keys: no error")
	}
	if _, err := f.Plan(1, 6); err == nil {
		t.Error("6 terminals from one merchant of 5: no error")
	}
	if got := len(f.spread(7)); got != 7 {
		t.Errorf("spread(7) = %d terminals", got)
	}
}

func TestJSONStr(t *testing.T) {
	b := []byte(`{"messageId":"17-0","action":"paymentComplete","transaction":{"id":"t","status":"COMPLETED","reference":"r-p0s12","history":[{"status":"PENDING"}]}}`)
	for k, want := range map[string]string{"messageId": "17-0", "action": "paymentComplete", "status": "COMPLETED", "reference": "r-p0s12", "nope": ""} {
		if got := jsonStr(b, k); got != want {
			t.Errorf("jsonStr(%s) = %q, want %q", k, got, want)
		}
	}
	if refSeq("r-p0s12", "r-p0s") != 12 || refSeq("r-p1s12", "r-p0s") != -1 || refSeq("r-p0sx", "r-p0s") != -1 {
		t.Error("refSeq")
	}
	if !idAfter("10-0", "9-5") || idAfter("9-5", "10-0") || !idAfter("9-10", "9-9") || idAfter("9-9", "9-9") {
		t.Error("idAfter")
	}
}

// TestFinalCounting: a paymentVoided after a final is a late approval
// voided by the hub, not a duplicate; a second paymentComplete is one.
func TestFinalCounting(t *testing.T) {
	d := &posDriver{terms: []*simTerminal{{}}, prefix: "x"}
	r := newRun(context.Background(), []*posDriver{d}, false)
	for range 4 {
		r.begin()
		d.sent, d.term, d.finals, d.answer, d.runOf = append(d.sent, nowNS()), append(d.term, 0), append(d.finals, 0), append(d.answer, 0), append(d.runOf, r)
		d.wrote, d.resp = append(d.wrote, nowNS()), append(d.resp, 0)
		r.issuedN.Add(1)
	}
	d.accepted("xs0", nowNS())
	d.final(0, "t0", "m1", "SUPERSEDED", false, nowNS())
	d.final(0, "t0", "m2", "VOIDED", true, nowNS())
	d.final(1, "t1", "m3", "COMPLETED", false, nowNS())
	d.final(1, "t1", "m4", "COMPLETED", false, nowNS())
	d.final(1, "t1", "m3", "COMPLETED", false, nowNS()) // replayed: not a duplicate
	d.accepted("xs2", nowNS())                          // accepted, never final: lost
	// Payment 3 was never answered: its connection ended first.
	r.stop()
	st := r.stats("hub", &fleetConns{drivers: []*posDriver{d}})
	if st.AutoVoids != 1 || st.Duplicated != 1 || st.Redelivered != 1 || st.Completed != 1 || st.Failures != 1 ||
		st.Lost != 1 || st.Unanswered != 1 || !st.Unfinished {
		t.Fatalf("stats = %+v", st)
	}
	// Steps only for the first final of a payment that was accepted (0);
	// payment 1's finals came without a paymentResponse.
	if st.RoundTrip.N != 2 || st.Accept.N != 1 || st.Finish.N != 1 {
		t.Errorf("round trips %+v, steps %+v and %+v: want 2 round trips, one of them split", st.RoundTrip, st.Accept, st.Finish)
	}
}

// The host's steal time is reported apart from the other processes, and
// neither includes the other: two cores busy for a second with the server,
// Redis and the generator using 1.2 of them and the host stealing 0.5.
func TestCPUShareSplitsSteal(t *testing.T) {
	at := time.Unix(1000, 0)
	b := cpuSample{at: at, serverOK: true, machine: time.Second, steal: 2 * time.Second}
	s := cpuSample{at: at.Add(time.Second), serverOK: true,
		server: 600 * time.Millisecond, redis: 200 * time.Millisecond, generator: 400 * time.Millisecond,
		machine: time.Second + 1500*time.Millisecond, steal: 2*time.Second + 500*time.Millisecond}
	var a cpuAcc
	a.add(b, s)
	c := a.share()
	if !c.Known || math.Abs(c.Other-0.3) > 1e-9 || math.Abs(c.Stolen-0.5) > 1e-9 {
		t.Fatalf("other %.3f, stolen %.3f (known %v), want 0.3 and 0.5", c.Other, c.Stolen, c.Known)
	}
	if got, want := c.String(), "server 0.60 cores, load generator 0.40, Redis 0.20, other processes 0.30, stolen by the host 0.50"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

// MachineBusy reads this machine's counters: busy time grows while this
// process keeps a core busy (reading them is the work), and steal never
// goes backwards.
func TestMachineBusyReadsProcStat(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc/stat here")
	}
	busy0, steal0 := MachineBusy()
	if busy0 <= 0 {
		t.Fatalf("busy %v: /proc/stat not read", busy0)
	}
	busy1, steal1 := busy0, steal0
	for deadline := time.Now().Add(5 * time.Second); busy1 == busy0 && time.Now().Before(deadline); {
		busy1, steal1 = MachineBusy()
	}
	if busy1 <= busy0 || steal1 < steal0 {
		t.Fatalf("busy %v → %v, steal %v → %v", busy0, busy1, steal0, steal1)
	}
}

// TestQuiet: a machine is quiet when its cores were busy under 15 % of the
// time, whatever their number.
func TestQuiet(t *testing.T) {
	for _, c := range []struct {
		busy, elapsed time.Duration
		cores         int
		want          bool
	}{
		{70 * time.Millisecond, 250 * time.Millisecond, 2, true},   // 0.28 of 2 cores
		{80 * time.Millisecond, 250 * time.Millisecond, 2, false},  // 0.32
		{500 * time.Millisecond, 250 * time.Millisecond, 16, true}, // 2 of 16
		{500 * time.Millisecond, 250 * time.Millisecond, 8, false}, // 2 of 8
		{0, 0, 2, false},
	} {
		if got := quiet(c.busy, c.elapsed, c.cores); got != c.want {
			t.Errorf("quiet(%s busy in %s, %d cores) = %v, want %v", c.busy, c.elapsed, c.cores, got, c.want)
		}
	}
}
