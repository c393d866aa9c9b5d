package bench

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// Targets of the issue, compared (never asserted) in the report.
const (
	TargetP50Ratio        = 1.3  // hub round trip p50 ≤ 1.3× the floor's
	TargetP99Ratio        = 1.5  // hub round trip p99 ≤ 1.5× the floor's
	TargetThroughputRatio = 0.9  // closed-loop payments/s ≥ 0.9× the floor's
	TargetLoadRate        = 2000 // the offered rate the load p99 target is for
	TargetLoadP99         = 25 * time.Millisecond
	TargetIdleBytes       = 20 << 10 // per idle connection at 15,000
	TargetReplay          = 300 * time.Millisecond
	TargetStorm           = 10 * time.Second
)

// Row is one line of the report table.
type Row struct {
	Scenario string
	Figure   string
	Measured string
	Target   string
	Verdict  string // "met", "missed" or "" (no target)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func rate(v float64) string { return fmt.Sprintf("%.0f/s", v) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Rows renders the results as the report table.
func (r *Results) Rows() []Row {
	b := &rowBuilder{}
	r.latencyRows(b)
	r.throughputRows(b)
	r.loadRows(b)
	r.idleRows(b)
	r.replayRows(b)
	r.stormRows(b)
	r.nodesRows(b)
	r.failoverRows(b)
	return b.rows
}

// rowBuilder collects the rows of the report table.
type rowBuilder struct{ rows []Row }

func (b *rowBuilder) add(s, f, m, t, v string) { b.rows = append(b.rows, Row{s, f, m, t, v}) }

// alloc adds the heap allocated per payment, when it was measured.
func (b *rowBuilder) alloc(scn string, s *PaymentStats, cpu CPUShare) {
	if a := cpu.AllocPerPayment(s); a > 0 {
		b.add(scn, s.Target+" heap allocated per payment", fmt.Sprintf("%.1f KiB (%.0f GC cycles in %s)", a/1024, cpu.GCs, cpu.Wall.Round(time.Millisecond)), "", "")
	}
}

// cpuPerPayment adds the server's and the load generator's CPU time per
// payment, when they were measured.
func (b *rowBuilder) cpuPerPayment(scn string, s *PaymentStats, cpu CPUShare) {
	if srv, gen := cpu.PerPayment(s), cpu.GeneratorPerPayment(s); srv > 0 {
		b.add(scn, s.Target+" CPU per payment", fmt.Sprintf("server %d µs, load generator %d µs", srv.Microseconds(), gen.Microseconds()), "", "")
	}
}

// steps adds where a loaded run's round trips went (PaymentStats.Accept,
// Finish, Late) and, for an open loop, where in time its slowest payments
// fell (Bursts).
func (b *rowBuilder) steps(scn string, s *PaymentStats) {
	if s.Accept.N == 0 {
		return
	}
	m := "to the paymentResponse " + s.Accept.Short() + "; on to the final " + s.Finish.Short()
	if s.Late.N > 0 {
		m += "; written late by the load generator " + s.Late.Short()
	}
	b.add(scn, s.Target+" steps", m, "", "")
	if s.Bursts.Of > 0 {
		b.add(scn, s.Target+" slowest 1 %", s.Bursts.String(), "", "")
	}
}

// pay adds the rows of a sequential run (latency or floor).
func (b *rowBuilder) pay(scn string, s *PaymentStats, cpu CPUShare) {
	b.add(scn, s.Target+" round trip", s.RoundTrip.String(), "", "")
	b.add(scn, s.Target+" rate", rate(s.Rate)+" ("+s.outcome()+")", "", "")
	if cpu.Known {
		b.add(scn, s.Target+" CPU", cpu.String(), "", "")
	}
	b.cpuPerPayment(scn, s, cpu)
	b.alloc(scn, s, cpu)
}

// latencyRows are scenarios 1 (latency) and 2 (floor) and their ratios.
func (r *Results) latencyRows(b *rowBuilder) {
	if r.Latency != nil {
		b.pay("1 latency", r.Latency, r.LatencyCPU)
	}
	if r.Floor != nil {
		b.pay("2 floor", r.Floor, r.FloorSeqCPU)
	}
	if r.Latency != nil && r.Floor != nil {
		if r.Interleaved > 0 {
			b.add("1, 2", "how", fmt.Sprintf("both servers up at once, taking turns in %d rounds of %d payments each (hub, floor, floor, hub, ...)",
				r.Interleaved, r.Latency.Sent/r.Interleaved), "", "")
		}
		p50 := ratio(float64(r.Latency.RoundTrip.P50), float64(r.Floor.RoundTrip.P50))
		p99 := ratio(float64(r.Latency.RoundTrip.P99), float64(r.Floor.RoundTrip.P99))
		b.add("1÷2", "hub ÷ floor, p50", fmt.Sprintf("%.2f×", p50), fmt.Sprintf("≤ %.1f×", TargetP50Ratio), verdict(p50 <= TargetP50Ratio))
		b.add("1÷2", "hub ÷ floor, p99", fmt.Sprintf("%.2f×", p99), fmt.Sprintf("≤ %.1f×", TargetP99Ratio), verdict(p99 <= TargetP99Ratio))
	}
}

// throughputRows are scenario 3, the hub and the floor in a closed loop.
func (r *Results) throughputRows(b *rowBuilder) {
	if t := r.Throughput; t != nil {
		b.add("3 throughput", "hub payments/s", rate(t.Rate), "", "")
		b.add("3 throughput", "hub round trip", t.RoundTrip.String(), "", "")
		b.steps("3 throughput", t)
		b.add("3 throughput", "hub CPU", r.ThroughputCPU.String(), "", "")
		b.alloc("3 throughput", t, r.ThroughputCPU)
	}
	if f := r.ThroughputFloor; f != nil {
		b.add("3 throughput", "floor payments/s", rate(f.Rate), "", "")
		b.add("3 throughput", "floor round trip", f.RoundTrip.String(), "", "")
		b.steps("3 throughput", f)
		b.add("3 throughput", "floor CPU", r.FloorCPU.String(), "", "")
	}
	if t, f := r.Throughput, r.ThroughputFloor; t != nil && f != nil {
		if r.LoadRounds > 0 {
			b.add("3 throughput", "how", turns(r.LoadRounds, r.Options.Duration), "", "")
		}
		if h, fl := r.ThroughputCPU.PerPayment(t), r.FloorCPU.PerPayment(f); h > 0 && fl > 0 {
			b.add("3 throughput", "server CPU per payment: hub, floor", fmt.Sprintf("%.2f ms, %.2f ms (%.1f×); load generator %.2f ms, %.2f ms",
				msf(h), msf(fl), ratio(float64(h), float64(fl)), msf(r.ThroughputCPU.GeneratorPerPayment(t)), msf(r.FloorCPU.GeneratorPerPayment(f))), "", "")
		}
	}
	if t, f := r.Throughput, r.ThroughputFloor; t != nil && f != nil {
		q := ratio(t.Rate, f.Rate)
		b.add("3 throughput", "hub ÷ floor", fmt.Sprintf("%.2f×", q), fmt.Sprintf("≥ %.1f×", TargetThroughputRatio), verdict(q >= TargetThroughputRatio))
	}
	if t := r.Throughput; t != nil {
		ok := t.Lost == 0 && t.Duplicated == 0 && !t.Unfinished
		b.add("3 throughput", "hub finals: lost / duplicated", fmt.Sprintf("%d / %d (%s)", t.Lost, t.Duplicated, t.outcome()), "0 / 0", verdict(ok))
	}
}

// loadRows are scenario 3b, the hub and the floor in an open loop.
func (r *Results) loadRows(b *rowBuilder) {
	if l := r.Load; l != nil {
		tgt := fmt.Sprintf("p99 ≤ %s at %d/s", ms(TargetLoadP99), TargetLoadRate)
		v := verdict(l.RoundTrip.P99 <= TargetLoadP99 && l.Failures == 0 && l.Lost == 0)
		if l.Offered != TargetLoadRate {
			v = "n/a (other rate)"
		}
		b.add("3b load", fmt.Sprintf("hub at %.0f/s offered", l.Offered), l.RoundTrip.String()+"; "+l.outcome()+"; "+rate(l.Rate)+" answered", tgt, v)
		b.steps("3b load", l)
		b.add("3b load", "hub CPU", r.LoadCPU.String(), "", "")
		b.alloc("3b load", l, r.LoadCPU)
	}
	if f := r.LoadFloor; f != nil {
		b.add("3b load", fmt.Sprintf("floor at %.0f/s offered", f.Offered), f.RoundTrip.String()+"; "+f.outcome()+"; "+rate(f.Rate)+" answered", "", "")
		b.steps("3b load", f)
		if r.LoadFloorCPU.Known {
			b.add("3b load", "floor CPU", r.LoadFloorCPU.String(), "", "")
		}
		if r.Load != nil && r.LoadRounds > 0 {
			b.add("3b load", "how", turns(r.LoadRounds, r.Options.Duration), "", "")
		}
	}
}

// idleRows are scenario 4, the memory of idle connections.
func (r *Results) idleRows(b *rowBuilder) {
	if i := r.Idle; i != nil {
		v := verdict(i.PerConn <= TargetIdleBytes)
		if i.Connections != 15000 {
			v += fmt.Sprintf(" (at %d, target is for 15,000)", i.Connections)
		}
		b.add("4 idle", fmt.Sprintf("hub RSS per idle connection (%d)", i.Connections),
			fmt.Sprintf("%.1f KiB (RSS %d → %d MiB)", float64(i.PerConn)/1024, i.RSSBefore>>20, i.RSSAfter>>20), "≤ 20 KiB", v)
		if rt := i.Runtime; rt != nil {
			b.add("4 idle", "of which, per connection (Go runtime)", fmt.Sprintf("%.2f goroutines, %.1f KiB stack, %.1f KiB heap", rt.Goroutines, rt.StackBytes/1024, rt.HeapBytes/1024), "", "")
		}
	}
}

// replayRows are scenario 5, a reconnecting POS's backlog.
func (r *Results) replayRows(b *rowBuilder) {
	if p := r.Replay; p != nil {
		v := verdict(p.FromDial <= TargetReplay && p.Received == p.Messages && p.Duplicates == 0)
		if p.Messages < 10000 {
			v += fmt.Sprintf(" (%d messages, target is for 10,000)", p.Messages)
		}
		b.add("5 replay", fmt.Sprintf("reconnect → last of %d messages", p.Messages),
			fmt.Sprintf("%s (%s after the greeting; %d received, %d duplicated)", ms(p.FromDial), ms(p.FromGreeting), p.Received, p.Duplicates), "≤ 300 ms", v)
	}
}

// stormRows are scenario 6, a fleet of terminals reconnecting at once.
func (r *Results) stormRows(b *rowBuilder) {
	if s := r.Storm; s != nil {
		v := verdict(s.AllOnline <= TargetStorm && s.Failed == 0)
		if s.Terminals < 15000 {
			v += fmt.Sprintf(" (%d terminals, target is for 15,000)", s.Terminals)
		}
		b.add("6 storm", fmt.Sprintf("all %d online", s.Terminals), fmt.Sprintf("%s (%d retries, %d never back)", ms(s.AllOnline), s.Retries, s.Failed), "≤ 10 s", v)
		b.add("6 storm", "handshake", s.Handshake.String(), "", "")
		if r.StormCPU.Known {
			b.add("6 storm", "CPU during the storm", r.StormCPU.String(), "", "")
		}
	}
}

// Markdown writes the report: a header, the table and any errors.
func (r *Results) Markdown(w io.Writer) {
	mark := ""
	if r.Options.Embedded {
		mark = " (embedded Redis: not comparable)"
	}
	fmt.Fprintf(w, "\n## termhub bench%s\n\n", mark)
	cpu := ""
	if r.CPUModel != "" {
		cpu = " (" + r.CPUModel + ")"
	}
	fmt.Fprintf(w, "%s, %s, %d cores%s, load average %s at the start and %s at the end\n\n", r.Started.Format("2006-01-02 15:04 MST"),
		r.Finished.Sub(r.Started).Round(time.Second), runtime.NumCPU(), cpu, r.LoadAvgStart, r.LoadAvgEnd)
	fmt.Fprintf(w, "host steal (/proc/stat): %s at the start, %s at the end\n\n", r.StealStart, r.StealEnd)
	fmt.Fprintln(w, "| scenario | figure | measured | target | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, row := range r.Rows() {
		m := row.Measured
		if r.Options.Embedded {
			m += " (embedded Redis: not comparable)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", row.Scenario, row.Figure, esc(m), esc(row.Target), row.Verdict)
	}
	if r.Profile != "" {
		fmt.Fprintf(w, "\nCPU profile of the hub during the throughput run: %s (go tool pprof -top %s)\n", r.Profile, r.Profile)
	}
	all := []*PaymentStats{r.Latency, r.Floor, r.Throughput, r.ThroughputFloor, r.Load, r.LoadFloor}
	if n := r.Nodes; n != nil {
		all = append(all, n.Same, n.Cross, n.SameLoad, n.CrossLoad)
	}
	if r.Failover != nil {
		all = append(all, &r.Failover.Payments)
	}
	for _, s := range all {
		if s != nil && len(s.Errors) > 0 {
			fmt.Fprintf(w, "\nfailures (%s): %s\n", s.Target, s.ErrorList())
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "\nscenarios that did not finish:")
		for _, e := range r.Errors {
			fmt.Fprintln(w, "  -", e)
		}
	}
}

func esc(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// outcome is "N payments, N failed, N lost, N duplicated", or for a phase
// whose drain ran out, how many were still without a final.
func (s PaymentStats) outcome() string {
	if s.Unfinished {
		return fmt.Sprintf("%d payments, %d failed, %d duplicated, %d accepted and still without a final when the drain ended, %d never answered (their connection ended first)", s.Sent, s.Failures, s.Duplicated, s.Lost, s.Unanswered)
	}
	out := fmt.Sprintf("%d payments, %d failed, %d lost, %d duplicated", s.Sent, s.Failures, s.Lost, s.Duplicated)
	if s.Unanswered > 0 {
		out += fmt.Sprintf(", %d never answered (their connection ended first)", s.Unanswered)
	}
	if s.AutoVoids > 0 {
		out += fmt.Sprintf(", %d late approvals voided", s.AutoVoids)
	}
	return out
}

// turns describes how a loaded scenario's hub and floor took turns.
func turns(rounds int, dur time.Duration) string {
	return fmt.Sprintf("both servers up at once, taking turns in %d blocks of %s each (hub, floor, floor, hub, ...)", rounds, dur/time.Duration(rounds))
}

// msf is d in milliseconds.
func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
