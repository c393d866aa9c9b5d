package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/client"
)

// Scenarios in the order a full run takes them.
var Scenarios = []string{"latency", "floor", "throughput", "load", "idle", "storm", "replay"}

// Options say what to run and how hard.
type Options struct {
	Scenarios  map[string]bool
	Payments   int           // sequential payments of latency and floor
	Rounds     int           // latency and floor together: blocks each run in, taking turns
	Warmup     int           // sequential payments before those, not measured
	Duration   time.Duration // throughput and load
	Rate       float64       // load: payments/s offered
	Terminals  int           // throughput and load
	POS        int           // throughput and load
	Idle       int           // idle connections
	Storm      int           // terminals in the reconnect storm
	Replay     int           // unacknowledged messages to replay
	Drain      time.Duration // how long to wait for finals in flight at the end of a phase
	Embedded   bool          // the hub runs on embedded Redis: figures are not comparable
	CPUProfile string        // the hub of the throughput run writes a CPU profile here
	// Redis is the Redis the servers use, for its CPU time (nil or embedded: not reported).
	Redis redis.UniversalClient
	// Log receives one progress line per step; nil discards them.
	Log io.Writer
}

// Launcher starts the servers a scenario drives. stop ends one and
// removes what it wrote to Redis.
type Launcher interface {
	Hub(ctx context.Context, name string, profile bool) (ep Endpoint, stop func(), err error)
	Floor(ctx context.Context, name string) (ep Endpoint, stop func(), err error)
}

// CPUShare is how many cores each party used on average during a phase.
type CPUShare struct {
	Server, Redis, Generator float64
	// Other is what the rest of the machine used meanwhile (all cores busy
	// time less the three above): other work on a shared machine that the
	// figures had to share the cores with.
	Other float64
	Known bool // Server and Generator were measured (Redis when > 0)
}

func (c CPUShare) String() string {
	if !c.Known {
		return "CPU not measured"
	}
	s := fmt.Sprintf("server %.2f cores, load generator %.2f", c.Server, c.Generator)
	if c.Redis > 0 {
		s += fmt.Sprintf(", Redis %.2f", c.Redis)
	}
	if c.Other >= 0.005 {
		s += fmt.Sprintf(", other processes %.2f", c.Other)
	}
	return s
}

// Results are everything one run measured.
type Results struct {
	Options  Options
	Started  time.Time
	Finished time.Time

	Latency, Floor              *PaymentStats
	Interleaved                 int // rounds latency and floor took turns in (0: run apart)
	LatencyCPU, FloorSeqCPU     CPUShare
	LoadAvgStart, LoadAvgEnd    string // /proc/loadavg, 1 minute
	Throughput, ThroughputFloor *PaymentStats
	ThroughputCPU, FloorCPU     CPUShare
	Load, LoadFloor             *PaymentStats
	LoadCPU                     CPUShare
	Idle                        *IdleStats
	Storm                       *StormStats
	StormCPU                    CPUShare
	Replay                      *ReplayStats
	Errors                      []string
	Profile                     string // where the throughput CPU profile was written
}

func (o *Options) fill() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Payments, 2000)
	def(&o.Rounds, 20)
	def(&o.Terminals, 1000)
	def(&o.POS, 100)
	def(&o.Idle, 15000)
	def(&o.Storm, 15000)
	def(&o.Replay, 10000)
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	if o.Drain <= 0 {
		o.Drain = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Scenarios) == 0 {
		o.Scenarios = map[string]bool{}
		for _, s := range Scenarios {
			o.Scenarios[s] = true
		}
	}
}

// ParseScenarios reads "all" or a comma-separated list of scenario names.
func ParseScenarios(s string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "all" {
			for _, n := range Scenarios {
				out[n] = true
			}
			continue
		}
		known := false
		for _, n := range Scenarios {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("bench: unknown scenario %q (want all or %s)", name, strings.Join(Scenarios, ", "))
		}
		out[name] = true
	}
	return out, nil
}

// Run runs the selected scenarios one after another, each against servers
// of its own, and returns what they measured. A scenario that fails is
// recorded in Results.Errors and the run goes on.
func Run(ctx context.Context, o Options, l Launcher) *Results {
	o.fill()
	res := &Results{Options: o, Started: time.Now(), LoadAvgStart: LoadAvg()}
	tag := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "bench: "+format+"\n", args...) }
	fail := func(scenario string, err error) {
		res.Errors = append(res.Errors, scenario+": "+err.Error())
		logf("%s failed: %v", scenario, err)
	}
	// seqSide is one server of the sequential scenarios, connected and
	// warmed up: one POS and one terminal.
	type seqSide struct {
		name string
		ep   Endpoint
		fc   *fleetConns
		cpu  cpuAcc
		runs []PaymentStats
	}
	prepare := func(name string, launch func() (Endpoint, func(), error)) (*seqSide, func()) {
		ep, stop, err := launch()
		if err != nil {
			fail(name, err)
			return nil, func() {}
		}
		plans, err := ep.Fleet.Plan(1, 1)
		if err != nil {
			stop()
			fail(name, err)
			return nil, func() {}
		}
		fc, err := connect(ctx, ep, plans, tag+name)
		if err != nil {
			stop()
			fail(name, err)
			return nil, func() {}
		}
		if o.Warmup > 0 {
			fc.closedLoop(ctx, ep.Name, int64(o.Warmup), 0, o.Drain)
		}
		return &seqSide{name: name, ep: ep, fc: fc}, func() { fc.close(); stop() }
	}
	measure := func(sd *seqSide, n int) {
		before := o.cpu(ctx, sd.ep)
		st := sd.fc.closedLoop(ctx, sd.ep.Name, int64(n), 0, o.Drain)
		sd.cpu.add(before, o.cpu(ctx, sd.ep))
		sd.runs = append(sd.runs, st)
	}
	finish := func(sd *seqSide, share *CPUShare) *PaymentStats {
		st := mergeStats(sd.runs)
		*share = sd.cpu.share()
		logf("%s: %s; %s", sd.name, st, share)
		return &st
	}
	profile := o.CPUProfile != ""
	launchHub := func() (Endpoint, func(), error) { return l.Hub(ctx, "latency", profile) }
	launchFloor := func() (Endpoint, func(), error) { return l.Floor(ctx, "floor") }
	signal := func(sd *seqSide, sig syscall.Signal) {
		if profile && sd.ep.Proc != nil {
			_ = sd.ep.Proc.Signal(sig)
		}
	}
	switch {
	case o.Scenarios["latency"] && o.Scenarios["floor"]:
		// Interleaved: both servers run at once and take turns, a block of
		// payments each, the order swapped every round (hub, floor, floor,
		// hub, ...), so that whatever else the machine does during the run
		// falls on both alike and the ratios compare like with like.
		// A function of its own, so that both servers stop when this
		// scenario ends rather than run on through the ones after it.
		func() {
			rounds := max(min(o.Rounds, o.Payments), 1)
			logf("latency and floor: %d sequential payments each, one POS and one terminal per server, in %d interleaved rounds", o.Payments, rounds)
			hub, stopHub := prepare("latency", launchHub)
			defer stopHub()
			floor, stopFloor := prepare("floor", launchFloor)
			defer stopFloor()
			if hub == nil || floor == nil {
				return
			}
			signal(hub, syscall.SIGUSR1)
			for r := range rounds {
				n := o.Payments/rounds + btoi(r < o.Payments%rounds)
				if r%2 == 0 {
					measure(hub, n)
					measure(floor, n)
				} else {
					measure(floor, n)
					measure(hub, n)
				}
			}
			signal(hub, syscall.SIGUSR2)
			res.Latency = finish(hub, &res.LatencyCPU)
			res.Floor = finish(floor, &res.FloorSeqCPU)
			res.Interleaved = rounds
		}()
	case o.Scenarios["latency"]:
		logf("latency: %d sequential payments, one POS, one terminal, against the hub", o.Payments)
		if hub, stop := prepare("latency", launchHub); hub != nil {
			signal(hub, syscall.SIGUSR1)
			measure(hub, o.Payments)
			signal(hub, syscall.SIGUSR2)
			res.Latency = finish(hub, &res.LatencyCPU)
			stop()
		}
	case o.Scenarios["floor"]:
		logf("floor: %d sequential payments through the bare relay", o.Payments)
		if floor, stop := prepare("floor", launchFloor); floor != nil {
			measure(floor, o.Payments)
			res.Floor = finish(floor, &res.FloorSeqCPU)
			stop()
		}
	}

	loaded := func(name string, launch func() (Endpoint, func(), error), open, profile bool) (*PaymentStats, CPUShare) {
		ep, stop, err := launch()
		if err != nil {
			fail(name, err)
			return nil, CPUShare{}
		}
		defer stop()
		plans, err := ep.Fleet.Plan(o.POS, o.Terminals)
		if err != nil {
			fail(name, err)
			return nil, CPUShare{}
		}
		fc, err := connect(ctx, ep, plans, tag+name)
		if err != nil {
			fail(name, err)
			return nil, CPUShare{}
		}
		defer fc.close()
		// One payment per terminal first, so that connections, pools and
		// caches are warm before anything is measured.
		fc.closedLoop(ctx, ep.Name, int64(o.Terminals), 0, o.Drain)
		if profile && ep.Proc != nil {
			_ = ep.Proc.Signal(syscall.SIGUSR1) // the profiled hub starts its CPU profile
		}
		before := o.cpu(ctx, ep)
		var st PaymentStats
		if open {
			st = fc.openLoop(ctx, ep.Name, o.Rate, o.Duration, o.Drain)
		} else {
			st = fc.closedLoop(ctx, ep.Name, 0, o.Duration, o.Drain)
		}
		share := o.cpu(ctx, ep).since(before)
		if profile && ep.Proc != nil {
			_ = ep.Proc.Signal(syscall.SIGUSR2) // and writes it
		}
		logf("%s: %s; %s", name, st, share)
		return &st, share
	}
	if o.Scenarios["throughput"] {
		logf("throughput: closed loop, %d terminals, %d POS, %s, against the hub", o.Terminals, o.POS, o.Duration)
		res.Throughput, res.ThroughputCPU = loaded("throughput", func() (Endpoint, func(), error) {
			return l.Hub(ctx, "throughput", o.CPUProfile != "")
		}, false, o.CPUProfile != "")
		if o.CPUProfile != "" && res.Throughput != nil {
			res.Profile = o.CPUProfile
		}
		logf("throughput: the same load through the bare relay")
		res.ThroughputFloor, res.FloorCPU = loaded("throughput-floor", func() (Endpoint, func(), error) { return l.Floor(ctx, "throughput-floor") }, false, false)
	}
	if o.Scenarios["load"] {
		logf("load: open loop, %.0f payments/s offered over %d terminals, %s, against the hub", o.Rate, o.Terminals, o.Duration)
		res.Load, res.LoadCPU = loaded("load", func() (Endpoint, func(), error) { return l.Hub(ctx, "load", false) }, true, false)
		logf("load: the same offered load through the bare relay")
		res.LoadFloor, _ = loaded("load-floor", func() (Endpoint, func(), error) { return l.Floor(ctx, "load-floor") }, true, false)
	}
	if o.Scenarios["idle"] || o.Scenarios["storm"] {
		res.idleAndStorm(ctx, o, l, logf, fail)
	}
	if o.Scenarios["replay"] {
		logf("replay: %d unacknowledged messages, then a reconnect", o.Replay)
		func() {
			ep, stop, err := l.Hub(ctx, "replay", false)
			if err != nil {
				fail("replay", err)
				return
			}
			defer stop()
			terms := 0
			if len(ep.Fleet.Merchants) > 0 {
				terms = min(100, len(ep.Fleet.Merchants[0].Terminals))
			}
			st, err := Replay(ctx, ep, o.Replay, terms, tag+"replay")
			if err != nil {
				fail("replay", err)
				return
			}
			logf("replay: %d messages, %d received, last after %s from the dial (%s from the greeting)", st.Messages, st.Received, ms(st.FromDial), ms(st.FromGreeting))
			res.Replay = &st
		}()
	}
	res.Finished, res.LoadAvgEnd = time.Now(), LoadAvg()
	return res
}

func (res *Results) idleAndStorm(ctx context.Context, o Options, l Launcher, logf func(string, ...any), fail func(string, error)) {
	ep, stop, err := l.Hub(ctx, "idle", false)
	if err != nil {
		fail("idle", err)
		return
	}
	defer stop()
	var conns []*client.Conn
	defer func() { closeAll(conns) }()
	if o.Scenarios["idle"] {
		creds := ep.Fleet.spread(o.Idle)
		logf("idle: %d idle terminal connections", len(creds))
		st, c, err := Idle(ctx, ep, creds)
		if err != nil {
			fail("idle", err)
		} else {
			conns = c
			res.Idle = &st
			logf("idle: hub RSS %d MiB → %d MiB, %d bytes per connection", st.RSSBefore>>20, st.RSSAfter>>20, st.PerConn)
		}
	}
	if !o.Scenarios["storm"] {
		return
	}
	creds := ep.Fleet.spread(o.Storm)
	if len(conns) >= len(creds) {
		closeAll(conns[len(creds):])
		conns = conns[:len(creds)]
	} else {
		closeAll(conns)
		conns = nil
		c, err := idleConns(ctx, ep, creds)
		if err != nil {
			fail("storm", err)
			return
		}
		conns = c
	}
	logf("storm: %d terminals dropped and reconnecting at once", len(creds))
	before := o.cpu(ctx, ep)
	st, c, err := Storm(ctx, ep, conns, creds)
	res.StormCPU = o.cpu(ctx, ep).since(before)
	conns = c
	if err != nil {
		fail("storm", err)
		return
	}
	logf("storm: all online after %s, handshake %s, %d retries, %d failed; %s", ms(st.AllOnline), st.Handshake, st.Retries, st.Failed, res.StormCPU)
	res.Storm = &st
}

// cpuSample is the CPU time used so far by the server, Redis and the bench.
type cpuSample struct {
	at                       time.Time
	server, redis, generator time.Duration
	machine                  time.Duration // busy time of every core
	serverOK                 bool
}

func (o *Options) cpu(ctx context.Context, ep Endpoint) cpuSample {
	s := cpuSample{at: time.Now(), generator: SelfCPU(), machine: MachineBusy()}
	if ep.Proc != nil {
		if d, err := ep.Proc.CPU(); err == nil {
			s.server, s.serverOK = d, true
		}
	}
	if o.Redis != nil && !o.Embedded {
		s.redis = RedisCPU(ctx, o.Redis)
	}
	return s
}

// cpuAcc adds up the CPU time of several phases.
type cpuAcc struct {
	wall, server, redis, generator, machine time.Duration
	serverMissing, machineMissing           bool // some phase could not read it
}

// add adds the phase from b to s.
func (a *cpuAcc) add(b, s cpuSample) {
	a.serverMissing = a.serverMissing || !s.serverOK || !b.serverOK
	a.machineMissing = a.machineMissing || s.machine <= 0 || b.machine <= 0
	a.wall += s.at.Sub(b.at)
	a.server += s.server - b.server
	a.redis += s.redis - b.redis
	a.generator += s.generator - b.generator
	a.machine += s.machine - b.machine
}

// share is the average use of the phases added.
func (a *cpuAcc) share() CPUShare {
	wall := a.wall.Seconds()
	if wall <= 0 || a.serverMissing {
		return CPUShare{}
	}
	c := CPUShare{Known: true, Server: a.server.Seconds() / wall, Redis: a.redis.Seconds() / wall, Generator: a.generator.Seconds() / wall}
	if !a.machineMissing {
		c.Other = max(a.machine.Seconds()/wall-c.Server-c.Redis-c.Generator, 0)
	}
	return c
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s cpuSample) since(b cpuSample) CPUShare {
	var a cpuAcc
	a.add(b, s)
	return a.share()
}

// RedisCPU is the CPU time the Redis server has used (INFO cpu), 0 when
// it cannot be read.
func RedisCPU(ctx context.Context, rdb redis.UniversalClient) time.Duration {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
