package bench

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"time"
)

// runner is one Run: its options and servers, and the Results it fills in
// scenario by scenario.
type runner struct {
	ctx     context.Context
	o       Options
	l       Launcher
	res     *Results
	tag     string // makes this run's references and ids its own
	profile bool   // hubs write CPU profiles (Options.CPUProfile)
}

// DefaultSettle is how long a group of scenarios waits at most for a quiet
// machine (Options.Settle).
const DefaultSettle = 15 * time.Second

// How settle tells a quiet machine: over one settleWindow, its cores were
// busy less than quietShare of the time, on average.
const (
	settleWindow = 250 * time.Millisecond
	quietShare   = 0.15
)

// quiet reports whether busy core time over elapsed wall time leaves a
// machine of cores quiet enough to measure on.
func quiet(busy, elapsed time.Duration, cores int) bool {
	return elapsed > 0 && float64(busy)/float64(elapsed) < quietShare*float64(cores)
}

// settle waits before a group of scenarios until the machine is quiet:
// what the group before left running (a server's exit closing thousands of sockets, Redis
// freeing the keys it wrote, this process's own garbage from the last
// fleet) would otherwise be measured with it.
func (r *runner) settle(scenario string) {
	if r.o.Settle < 0 {
		return
	}
	runtime.GC()
	start := time.Now()
	prev, _ := MachineBusy()
	if prev == 0 {
		r.logf("%s: the machine's CPU time cannot be read: not waiting for it to be quiet", scenario)
		return
	}
	prevAt := start
	for windows := 1; ; windows++ {
		select {
		case <-time.After(settleWindow):
		case <-r.ctx.Done():
			return
		}
		cur, _ := MachineBusy()
		now := time.Now()
		if quiet(cur-prev, now.Sub(prevAt), runtime.NumCPU()) {
			if windows > 1 {
				r.logf("%s: waited %s for the machine to be quiet", scenario, time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if time.Since(start) >= r.o.Settle {
			r.logf("%s: the machine is still busy after %s (%.2f cores): starting all the same", scenario, r.o.Settle, float64(cur-prev)/float64(now.Sub(prevAt)))
			return
		}
		prev, prevAt = cur, now
	}
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.o.Log, "bench: "+format+"\n", args...)
}

// fail records that scenario failed; the run goes on.
func (r *runner) fail(scenario string, err error) {
	r.res.Errors = append(r.res.Errors, scenario+": "+err.Error())
	r.logf("%s failed: %v", scenario, err)
}

// prepare starts a server for a scenario and connects its load (pos POS
// with terms terminals), warmed up with warm unmeasured payments. The
// function it returns stops both.
func (r *runner) prepare(name string, launch func() (Endpoint, func(), error), pos, terms, warm int) (*side, func()) {
	ep, stop, err := launch()
	if err != nil {
		r.fail(name, err)
		return nil, func() {}
	}
	plans, err := ep.Fleet.Plan(pos, terms)
	if err != nil {
		stop()
		r.fail(name, err)
		return nil, func() {}
	}
	fc, err := connect(r.ctx, ep, plans, r.tag+name)
	if err != nil {
		stop()
		r.fail(name, err)
		return nil, func() {}
	}
	if warm > 0 {
		fc.closedLoop(r.ctx, ep.Name, int64(warm), 0, r.o.Drain)
	}
	return &side{name: name, ep: ep, fc: fc}, func() { fc.close(); stop() }
}

// measure runs one block of a phase against a server and adds it to the
// server's figures.
func (r *runner) measure(sd *side, phase func(sd *side) PaymentStats) {
	before := r.o.cpu(r.ctx, sd.ep)
	st := phase(sd)
	sd.cpu.add(before, r.o.cpu(r.ctx, sd.ep))
	sd.runs = append(sd.runs, st)
}

// sequential is n payments one after the other (latency and floor).
func (r *runner) sequential(n int) func(sd *side) PaymentStats {
	return func(sd *side) PaymentStats { return sd.fc.closedLoop(r.ctx, sd.ep.Name, int64(n), 0, r.o.Drain) }
}

// finish merges a server's blocks, sets share to its CPU and logs both.
func (r *runner) finish(sd *side, share *CPUShare) *PaymentStats {
	st := mergeStats(sd.runs)
	*share = sd.cpu.share()
	r.logf("%s: %s; %s", sd.name, st, share)
	return &st
}

// takeTurns runs rounds blocks of phase against each of a and b, the order
// swapped every round (a, b, b, a, ...), so that whatever else the machine
// does during the run falls on both alike and their ratio compares like
// with like.
func (r *runner) takeTurns(a, b *side, rounds int, phase func(round int) func(sd *side) PaymentStats) {
	for round := range rounds {
		first, second := a, b
		if round%2 == 1 {
			first, second = b, a
		}
		r.measure(first, phase(round))
		r.measure(second, phase(round))
	}
}

func (r *runner) launchHub() (Endpoint, func(), error) {
	return r.l.Hub(r.ctx, "latency", r.profile)
}

func (r *runner) launchFloor() (Endpoint, func(), error) { return r.l.Floor(r.ctx, "floor", r.profile) }

// signal starts (SIGUSR1) or stops (SIGUSR2) the CPU profile of a hub or
// floor launched with profiling (they are, when r.profile); any other
// server's default action would be to exit.
func (r *runner) signal(sd *side, sig syscall.Signal) {
	if r.profile && sd.ep.Proc != nil {
		_ = sd.ep.Proc.Signal(sig)
	}
}

// latencyAndFloor runs the latency and floor scenarios, interleaved when
// both are selected.
func (r *runner) latencyAndFloor() {
	o, res := r.o, r.res
	switch {
	case o.Scenarios["latency"] && o.Scenarios["floor"]:
		r.interleavedLatency()
	case o.Scenarios["latency"]:
		r.logf("latency: %d sequential payments, one POS, one terminal, against the hub", o.Payments)
		if hub, stop := r.prepare("latency", r.launchHub, 1, 1, o.Warmup); hub != nil {
			r.signal(hub, syscall.SIGUSR1)
			r.measure(hub, r.sequential(o.Payments))
			r.signal(hub, syscall.SIGUSR2)
			res.Latency = r.finish(hub, &res.LatencyCPU)
			stop()
		}
	case o.Scenarios["floor"]:
		r.logf("floor: %d sequential payments through the bare relay", o.Payments)
		if floor, stop := r.prepare("floor", r.launchFloor, 1, 1, o.Warmup); floor != nil {
			r.measure(floor, r.sequential(o.Payments))
			res.Floor = r.finish(floor, &res.FloorSeqCPU)
			stop()
		}
	}
}

// interleavedLatency runs latency and floor together: both servers run at
// once and take turns, a block of payments each, the order swapped every
// round (hub, floor, floor, hub, ...), so that whatever else the machine
// does during the run falls on both alike and the ratios compare like with
// like. Both servers stop when it returns rather than run on through the
// scenarios after it.
func (r *runner) interleavedLatency() {
	o, res := r.o, r.res
	rounds := max(min(o.Rounds, o.Payments), 1)
	r.logf("latency and floor: %d sequential payments each, one POS and one terminal per server, in %d interleaved rounds", o.Payments, rounds)
	hub, stopHub := r.prepare("latency", r.launchHub, 1, 1, o.Warmup)
	defer stopHub()
	floor, stopFloor := r.prepare("floor", r.launchFloor, 1, 1, o.Warmup)
	defer stopFloor()
	if hub == nil || floor == nil {
		return
	}
	stopSelf := func() {}
	if r.profile {
		stopSelf = profileSelf(ProfilePath(o.CPUProfile, "latency-generator"), r.logf)
	}
	r.signal(hub, syscall.SIGUSR1)
	r.signal(floor, syscall.SIGUSR1)
	r.takeTurns(hub, floor, rounds, func(round int) func(sd *side) PaymentStats {
		return r.sequential(o.Payments/rounds + btoi(round < o.Payments%rounds))
	})
	stopSelf()
	r.signal(hub, syscall.SIGUSR2)
	r.signal(floor, syscall.SIGUSR2)
	res.Latency = r.finish(hub, &res.LatencyCPU)
	res.Floor = r.finish(floor, &res.FloorSeqCPU)
	res.Interleaved = rounds
}

// throughputAndLoad runs the throughput (closed loop) and load (open loop)
// scenarios that are selected.
func (r *runner) throughputAndLoad() {
	o, res := r.o, r.res
	if o.Scenarios["throughput"] {
		r.settle("throughput")
		r.logf("throughput: closed loop, %d terminals, %d POS, %s each for the hub and the floor, taking turns", o.Terminals, o.POS, o.Duration)
		res.Throughput, res.ThroughputFloor, res.ThroughputCPU, res.FloorCPU, res.LoadRounds = r.loaded("throughput", func() (Endpoint, func(), error) {
			return r.l.Hub(r.ctx, "throughput", r.profile)
		}, false, r.profile)
		if r.profile && res.Throughput != nil {
			res.Profile = o.CPUProfile
		}
	}
	if o.Scenarios["load"] {
		r.settle("load")
		r.logf("load: open loop, %.0f payments/s offered over %d terminals, %s each for the hub and the floor, taking turns", o.Rate, o.Terminals, o.Duration)
		res.Load, res.LoadFloor, res.LoadCPU, res.LoadFloorCPU, res.LoadRounds = r.loaded("load", func() (Endpoint, func(), error) {
			return r.l.Hub(r.ctx, "load", r.profile)
		}, true, r.profile)
	}
}

// loaded runs the hub and the floor under the same load, interleaved like
// latency and floor: both up at once, each with its own fleet (warmed up
// by one payment per terminal), taking turns in blocks of
// Duration/LoadRounds, so that both meet the same moments of a noisy
// machine.
func (r *runner) loaded(scenario string, launchHub func() (Endpoint, func(), error), open, profile bool) (hubSt, floorSt *PaymentStats, hubCPU, floorCPU CPUShare, rounds int) {
	o := r.o
	rounds = max(min(o.LoadRounds, int(o.Duration/minBlock)), 1)
	hub, stopHub := r.prepare(scenario, launchHub, o.POS, o.Terminals, o.Terminals)
	defer stopHub()
	floor, stopFloor := r.prepare(scenario+"-floor", func() (Endpoint, func(), error) { return r.l.Floor(r.ctx, scenario+"-floor", profile) }, o.POS, o.Terminals, o.Terminals)
	defer stopFloor()
	if hub == nil || floor == nil {
		return nil, nil, CPUShare{}, CPUShare{}, 0
	}
	block := o.Duration / time.Duration(rounds)
	phase := func(sd *side) PaymentStats {
		if open {
			return sd.fc.openLoop(r.ctx, sd.ep.Name, o.Rate, block, o.Drain)
		}
		return sd.fc.closedLoop(r.ctx, sd.ep.Name, 0, block, o.Drain)
	}
	stopSelf := func() {}
	if profile {
		r.signal(hub, syscall.SIGUSR1)
		r.signal(floor, syscall.SIGUSR1)
		stopSelf = profileSelf(ProfilePath(o.CPUProfile, scenario+"-generator"), r.logf)
	}
	r.takeTurns(hub, floor, rounds, func(int) func(sd *side) PaymentStats { return phase })
	if profile {
		stopSelf()
		r.signal(hub, syscall.SIGUSR2)
		r.signal(floor, syscall.SIGUSR2)
	}
	hubSt, floorSt = r.finish(hub, &hubCPU), r.finish(floor, &floorCPU)
	return hubSt, floorSt, hubCPU, floorCPU, rounds
}

// replay measures how long a reconnecting POS takes to receive a backlog
// of unacknowledged messages.
func (r *runner) replay() {
	r.logf("replay: %d unacknowledged messages, then a reconnect", r.o.Replay)
	ep, stop, err := r.l.Hub(r.ctx, "replay", false)
	if err != nil {
		r.fail("replay", err)
		return
	}
	defer stop()
	terms := 0
	if len(ep.Fleet.Merchants) > 0 {
		terms = min(100, len(ep.Fleet.Merchants[0].Terminals))
	}
	st, err := Replay(r.ctx, ep, r.o.Replay, terms, r.tag+"replay")
	if err != nil {
		r.fail("replay", err)
		return
	}
	r.logf("replay: %d messages, %d received, last after %s from the dial (%s from the greeting)", st.Messages, st.Received, ms(st.FromDial), ms(st.FromGreeting))
	r.res.Replay = &st
}
