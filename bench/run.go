package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/termhub/termhub/client"
)

// Scenarios in the order a full run takes them.
var Scenarios = []string{"latency", "floor", "throughput", "load", "idle", "storm", "replay"}

// NodeScenarios run several nodes on one Redis (Options.Nodes): not part
// of "all", which measures one hub.
var NodeScenarios = []string{"nodes", "failover"}

// Options say what to run and how hard.
type Options struct {
	Scenarios  map[string]bool
	Payments   int           // sequential payments of latency and floor
	Rounds     int           // latency and floor together: blocks each run in, taking turns
	LoadRounds int           // throughput and load: blocks the hub and the floor each run in, taking turns
	Warmup     int           // sequential payments before those, not measured
	Duration   time.Duration // throughput and load
	Rate       float64       // load: payments/s offered
	Terminals  int           // throughput and load
	POS        int           // throughput and load
	Idle       int           // idle connections
	Storm      int           // terminals in the reconnect storm
	Replay     int           // unacknowledged messages to replay
	Drain      time.Duration // how long to wait for finals in flight at the end of a phase
	// Settle is how long each group of scenarios waits at most for a
	// quiet machine before it starts (0: DefaultSettle; negative: it does
	// not wait).
	Settle time.Duration
	// Nodes is how many hub processes the multi-node scenarios start on
	// the same Redis; NodeTimeout is their node_timeout.
	Nodes       int
	NodeTimeout time.Duration
	// CardDelay is how long a failover terminal takes to answer a payment,
	// so that payments are in flight when the node dies.
	CardDelay  time.Duration
	Embedded   bool   // the hub runs on embedded Redis: figures are not comparable
	CPUProfile string // the hub of the throughput run writes a CPU profile here (latency's and load's beside it)
	// Redis is the Redis the servers use, for its CPU time (nil or embedded: not reported).
	Redis redis.UniversalClient
	// Log receives one progress line per step; nil discards them.
	Log io.Writer
}

// Launcher starts the servers a scenario drives. stop ends one and
// removes what it wrote to Redis.
type Launcher interface {
	Hub(ctx context.Context, name string, profile bool) (ep Endpoint, stop func(), err error)
	Floor(ctx context.Context, name string, profile bool) (ep Endpoint, stop func(), err error)
}

// CPUShare is how many cores each party used on average during a phase.
type CPUShare struct {
	Server, Redis, Generator float64
	// Other is what the rest of the machine used meanwhile (all cores busy
	// time less the three above): other work on a shared machine that the
	// figures had to share the cores with.
	Other float64
	// Stolen is the time the hypervisor gave this machine's cores to
	// others (steal), in cores: not in Other, and not the figures' doing.
	Stolen float64
	Known  bool          // Server and Generator were measured (Redis when > 0)
	Wall   time.Duration // how long the phases measured lasted, drains included
	// Allocated and GCs are what the hub's Go runtime reported over the
	// same phases (/metrics: go_memstats_alloc_bytes_total and
	// go_gc_duration_seconds_count); AllocKnown says whether it could be
	// read (not for the floor relay, which has no /metrics).
	Allocated  float64
	GCs        float64
	AllocKnown bool
}

// AllocPerPayment is the hub's heap allocation per final of st, in bytes,
// over the same phases; 0 when unknown.
func (c CPUShare) AllocPerPayment(st *PaymentStats) float64 {
	n := st.Completed + st.Failures
	if !c.AllocKnown || n == 0 {
		return 0
	}
	return c.Allocated / float64(n)
}

// PerPayment is the server CPU time per final of st, over the same phases.
func (c CPUShare) PerPayment(st *PaymentStats) time.Duration { return c.perPayment(c.Server, st) }

// GeneratorPerPayment is the load generator's CPU time per final of st,
// over the same phases: what driving one payment costs the bench itself,
// on the cores the server shares.
func (c CPUShare) GeneratorPerPayment(st *PaymentStats) time.Duration {
	return c.perPayment(c.Generator, st)
}

func (c CPUShare) perPayment(cores float64, st *PaymentStats) time.Duration {
	n := st.Completed + st.Failures
	if !c.Known || n == 0 {
		return 0
	}
	return time.Duration(cores * float64(c.Wall) / float64(n))
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
	if c.Stolen >= 0.005 {
		s += fmt.Sprintf(", stolen by the host %.2f", c.Stolen)
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
	CPUModel                    string // the processor, as /proc/cpuinfo names it
	Throughput, ThroughputFloor *PaymentStats
	ThroughputCPU, FloorCPU     CPUShare
	Load, LoadFloor             *PaymentStats
	LoadCPU, LoadFloorCPU       CPUShare
	LoadRounds                  int // blocks throughput and load took turns in, each server
	Idle                        *IdleStats
	Storm                       *StormStats
	StormCPU                    CPUShare
	Replay                      *ReplayStats
	Nodes                       *NodesStats
	Failover                    *FailoverStats
	// StealStart and StealEnd are the host's steal time (/proc/stat) so
	// far, when the run started and ended.
	StealStart, StealEnd time.Duration
	Errors               []string
	Profile              string // where the throughput CPU profile was written
}

func (o *Options) fill() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Payments, 2000)
	def(&o.Rounds, 20)
	def(&o.LoadRounds, 6)
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
	if o.Settle == 0 {
		o.Settle = DefaultSettle
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 10 * time.Second
	}
	if o.CardDelay <= 0 {
		o.CardDelay = 2 * time.Second
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
		for _, n := range append(Scenarios[:len(Scenarios):len(Scenarios)], NodeScenarios...) {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("bench: unknown scenario %q (want all or %s, %s)", name, strings.Join(Scenarios, ", "), strings.Join(NodeScenarios, ", "))
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
	r := &runner{ctx: ctx, o: o, l: l,
		res: &Results{Options: o, Started: time.Now(), LoadAvgStart: LoadAvg(), CPUModel: CPUModel()},
		tag: strconv.FormatInt(time.Now().UnixNano()%1e9, 36), profile: o.CPUProfile != ""}
	_, r.res.StealStart = MachineBusy()
	if o.Scenarios["latency"] || o.Scenarios["floor"] {
		r.settle("latency")
		r.latencyAndFloor()
	}
	r.throughputAndLoad()
	if o.Scenarios["idle"] || o.Scenarios["storm"] {
		r.settle("idle")
		r.res.idleAndStorm(ctx, o, l, r.logf, r.fail)
	}
	if o.Scenarios["replay"] {
		r.settle("replay")
		r.replay()
	}
	if o.Scenarios["nodes"] {
		r.settle("nodes")
		r.nodes()
	}
	if o.Scenarios["failover"] {
		r.settle("failover")
		r.failover()
	}
	r.res.Finished, r.res.LoadAvgEnd = time.Now(), LoadAvg()
	_, r.res.StealEnd = MachineBusy()
	return r.res
}

func (res *Results) idleAndStorm(ctx context.Context, o Options, l Launcher, logf func(string, ...any), fail func(string, error)) {
	// With --cpuprofile, the storm's hub is profiled (FILE-storm), and so is
	// the bench itself during the storm (FILE-storm-generator), as during
	// the throughput and load runs.
	name, profile := "idle", false
	if o.Scenarios["storm"] {
		name, profile = "storm", o.CPUProfile != ""
	}
	ep, stop, err := l.Hub(ctx, name, profile)
	if err != nil {
		fail(name, err)
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
	if profile && ep.Proc != nil {
		_ = ep.Proc.Signal(syscall.SIGUSR1)
	}
	stopSelf := func() {}
	if profile {
		stopSelf = profileSelf(ProfilePath(o.CPUProfile, "storm-generator"), logf)
	}
	st, c, err := Storm(ctx, ep, conns, creds)
	stopSelf()
	if profile && ep.Proc != nil {
		_ = ep.Proc.Signal(syscall.SIGUSR2)
	}
	res.StormCPU = o.cpu(ctx, ep).since(before)
	conns = c
	if err != nil {
		fail("storm", err)
		return
	}
	logf("storm: all online after %s, handshake %s, %d retries, %d failed; %s", ms(st.AllOnline), st.Handshake, st.Retries, st.Failed, res.StormCPU)
	res.Storm = &st
}

// profileSelf starts a CPU profile of this process, the load generator,
// into path; the function it returns stops it. Profiling is best effort: a
// profile that cannot start is logged and skipped.
func profileSelf(path string, logf func(string, ...any)) func() {
	f, err := os.Create(path)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
			_ = os.Remove(path) // no empty profile left behind
		}
	}
	if err != nil {
		logf("no CPU profile of the load generator: %v", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// minBlock is the shortest block a loaded scenario's servers take turns in.
const minBlock = 100 * time.Millisecond

// side is one server of a scenario with its connected load, and what the
// blocks run against it measured.
type side struct {
	name string
	ep   Endpoint
	fc   *fleetConns
	cpu  cpuAcc
	runs []PaymentStats
}

// cpuSample is the CPU time used so far by the server, Redis and the bench.
type cpuSample struct {
	at                       time.Time
	server, redis, generator time.Duration
	machine, steal           time.Duration // busy and stolen time of every core
	serverOK                 bool
	alloc, gcs               float64 // the hub's runtime counters, when allocOK
	allocOK                  bool
}

func (o *Options) cpu(ctx context.Context, ep Endpoint) cpuSample {
	s := cpuSample{at: time.Now(), generator: SelfCPU()}
	s.machine, s.steal = MachineBusy()
	if ep.Proc != nil {
		if d, err := ep.Proc.CPU(); err == nil {
			s.server, s.serverOK = d, true
		}
	}
	if o.Redis != nil && !o.Embedded {
		s.redis = RedisCPU(ctx, o.Redis)
	}
	if ep.OpsToken != "" {
		if rt, err := ep.runtimeMetrics(ctx); err == nil {
			a, okA := rt["go_memstats_alloc_bytes_total"]
			g, okG := rt["go_gc_duration_seconds_count"]
			s.alloc, s.gcs, s.allocOK = a, g, okA && okG
		}
	}
	return s
}

// cpuAcc adds up the CPU time of several phases.
type cpuAcc struct {
	wall, server, redis, generator, machine, steal time.Duration
	alloc, gcs                                     float64
	serverMissing, machineMissing                  bool // some phase could not read it
	allocMissing                                   bool
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
	a.steal += s.steal - b.steal
	a.allocMissing = a.allocMissing || !s.allocOK || !b.allocOK
	a.alloc += s.alloc - b.alloc
	a.gcs += s.gcs - b.gcs
}

// share is the average use of the phases added.
func (a *cpuAcc) share() CPUShare {
	wall := a.wall.Seconds()
	if wall <= 0 {
		return CPUShare{}
	}
	c := CPUShare{Wall: a.wall}
	if !a.allocMissing {
		c.Allocated, c.GCs, c.AllocKnown = a.alloc, a.gcs, true
	}
	if a.serverMissing {
		return c
	}
	c.Known, c.Server, c.Redis, c.Generator = true, a.server.Seconds()/wall, a.redis.Seconds()/wall, a.generator.Seconds()/wall
	if !a.machineMissing {
		c.Other = max(a.machine.Seconds()/wall-c.Server-c.Redis-c.Generator, 0)
		c.Stolen = a.steal.Seconds() / wall
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
