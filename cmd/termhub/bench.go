package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/termhub/termhub/bench"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/redisx"
)

const benchUsage = `usage: termhub bench [flags]

Load-tests a hub with real WebSocket clients and compares it with a bare
durable relay (the floor) on the same Redis. By default it starts the hub
itself as a child process (this binary, serve --config <generated>), so the
hub's RSS and CPU can be read and each process has its own open-file limit.
Scenarios: latency, floor, throughput, load, idle, storm, replay (or all).
With --nodes N (2 or more), the scenarios nodes (the default then: POS and
terminal on the same node and on different nodes, in turns) and failover
(kill -9 of the node holding every terminal, payments in flight) start N
hubs on the same Redis.
Without a Redis URL everything runs on embedded Redis and every figure is
marked "(embedded Redis: not comparable)".

flags:
`

// runBenchCommand is `termhub bench`.
func runBenchCommand(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return benchMain(ctx, args, os.Stdout, os.Stderr)
}

// benchFlags is a parsed `termhub bench` command line.
type benchFlags struct {
	redisURL, scenario                   string
	duration                             time.Duration
	rate                                 float64
	terminals, pos, idle, storm, replay  int
	payments, warmup, rounds, loadRounds int
	hubURL, hubConfig                    string
	hubPID                               int
	cpuprofile, logLevel, out            string
	keep                                 bool
	nodes                                int
	nodeTimeout, cardDelay, settle       time.Duration
	serveFloor, floorPrefix, serveHub    string // child modes, used by the bench itself
}

// parseBenchFlags parses args; flag.ErrHelp means the usage was asked for
// and printed.
func parseBenchFlags(args []string, stderr io.Writer) (*benchFlags, error) {
	f := &benchFlags{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	fs.StringVar(&f.redisURL, "redis", os.Getenv("REDIS_URL"), "Redis URL for the hub and the floor relay (default $REDIS_URL; empty: embedded, not comparable)")
	fs.StringVar(&f.scenario, "scenario", "all", "all, or a comma-separated list of latency, floor, throughput, load, idle, storm, replay, nodes, failover (with --nodes; the default then is nodes)")
	fs.IntVar(&f.nodes, "nodes", 0, "nodes and failover: start this many hubs on the same Redis (one hub)")
	fs.DurationVar(&f.nodeTimeout, "node-timeout", 10*time.Second, "nodes and failover: the nodes' node_timeout")
	fs.DurationVar(&f.cardDelay, "card-delay", 2*time.Second, "failover: how long each terminal takes to answer a payment")
	fs.DurationVar(&f.duration, "duration", 60*time.Second, "how long the throughput and load runs last (each, hub and floor)")
	fs.Float64Var(&f.rate, "rate", 2000, "load: payments/s offered")
	fs.IntVar(&f.terminals, "terminals", 1000, "throughput and load: terminals")
	fs.IntVar(&f.pos, "pos", 100, "throughput and load: POS connections")
	fs.IntVar(&f.idle, "idle", 15000, "idle: connections")
	fs.IntVar(&f.storm, "storm", 15000, "storm: terminals dropped and reconnecting at once")
	fs.IntVar(&f.replay, "replay", 10000, "replay: unacknowledged messages")
	fs.IntVar(&f.payments, "payments", 2000, "latency and floor: sequential payments measured")
	fs.IntVar(&f.warmup, "warmup", 100, "latency and floor: sequential payments before those, not measured")
	fs.IntVar(&f.rounds, "rounds", 20, "latency and floor together: the hub and the floor take turns in this many blocks of payments")
	fs.IntVar(&f.loadRounds, "load-rounds", 6, "throughput and load: the hub and the floor take turns in this many blocks of --duration/N each")
	fs.StringVar(&f.hubURL, "hub-url", "", "bench an already running hub at this URL instead of starting one (needs --config)")
	fs.StringVar(&f.hubConfig, "config", "", "with --hub-url: the running hub's configuration file, for its credentials")
	fs.IntVar(&f.hubPID, "hub-pid", 0, "with --hub-url: the running hub's process id, for its RSS and CPU")
	fs.StringVar(&f.cpuprofile, "cpuprofile", "", "write a CPU profile of the hub during the throughput run to FILE (latency, load, storm: FILE-latency, FILE-load, FILE-storm; the floor relay: FILE-floor, FILE-throughput-floor, FILE-load-floor; the load generator during latency, throughput, load, storm: FILE-<scenario>-generator)")
	fs.StringVar(&f.logLevel, "hub-log-level", "info", "log_level of the hub the bench starts")
	fs.DurationVar(&f.settle, "settle", bench.DefaultSettle, "before each group of scenarios, wait at most this long for the machine to be quiet (its cores busy under 15 % of 250 ms); 0 or negative: do not wait")
	fs.StringVar(&f.out, "out", "", "also write the report to FILE")
	fs.BoolVar(&f.keep, "keep", false, "keep the directory of generated configurations and server logs")
	// Child modes, used by the bench itself.
	fs.StringVar(&f.serveFloor, "serve-floor", "", "(internal) run a floor relay on this address")
	fs.StringVar(&f.floorPrefix, "floor-prefix", "bench:floor:", "(internal) the floor relay's key prefix")
	fs.StringVar(&f.serveHub, "serve-hub", "", "(internal) run the hub with this configuration, CPU-profiled between SIGUSR1 and SIGUSR2")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	scenarioSet := false
	fs.Visit(func(fl *flag.Flag) { scenarioSet = scenarioSet || fl.Name == "scenario" })
	if f.nodes > 1 && !scenarioSet {
		f.scenario = "nodes"
	}
	return f, nil
}

func benchMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseBenchFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case f.serveFloor != "":
		if f.cpuprofile != "" {
			return profiledBetweenSignals(f.cpuprofile, func() error { return runFloorChild(ctx, f.serveFloor, f.redisURL, f.floorPrefix) })
		}
		return runFloorChild(ctx, f.serveFloor, f.redisURL, f.floorPrefix)
	case f.serveHub != "":
		if f.cpuprofile == "" {
			return errors.New("bench: --serve-hub needs --cpuprofile")
		}
		return profiledBetweenSignals(f.cpuprofile, func() error { return runServe([]string{"--config", f.serveHub}) })
	}

	scenarios, err := bench.ParseScenarios(f.scenario)
	if err != nil {
		return err
	}
	raiseFileLimit(stderr)
	embedded := f.redisURL == ""
	if embedded {
		fmt.Fprintln(stderr, "bench: WARNING: no Redis URL (--redis or REDIS_URL): the hub and the floor relay run on embedded")
		fmt.Fprintln(stderr, "bench: WARNING: in-process Redis, and every figure is marked \"(embedded Redis: not comparable)\"")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "termhub-bench-")
	if err != nil {
		return err
	}
	if f.keep {
		fmt.Fprintf(stderr, "bench: configurations and server logs in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if f.cpuprofile != "" {
		if p, err := filepath.Abs(f.cpuprofile); err == nil {
			f.cpuprofile = p
		}
	}

	settle := f.settle
	if settle <= 0 {
		settle = -1 // bench.Options reads 0 as its default
	}
	opts := bench.Options{
		Scenarios: scenarios, Payments: f.payments, Rounds: f.rounds, LoadRounds: f.loadRounds, Warmup: f.warmup, Duration: f.duration, Rate: f.rate,
		Terminals: f.terminals, POS: f.pos, Idle: f.idle, Storm: f.storm, Replay: f.replay, Settle: settle,
		Embedded: embedded, CPUProfile: f.cpuprofile, Log: stderr,
		Nodes: f.nodes, NodeTimeout: f.nodeTimeout, CardDelay: f.cardDelay,
	}
	tag := strconv.FormatInt(time.Now().Unix()%1e7, 36) + strconv.Itoa(os.Getpid()%1000)
	child := &bench.ChildLauncher{Exe: exe, RedisURL: f.redisURL, Dir: dir, Tag: tag, LogLevel: f.logLevel, CPUProfile: f.cpuprofile, Log: stderr}
	if !embedded {
		store, err := redisx.Open(ctx, f.redisURL, 0)
		if err != nil {
			return err
		}
		defer store.Close()
		child.Redis, opts.Redis = store.Client, store.Client
	}
	launcher, err := f.launcher(child, scenarios)
	if err != nil {
		return err
	}
	return writeBenchReport(bench.Run(ctx, opts, launcher), stdout, f.out)
}

// launcher starts the servers as children, or with --hub-url benches the
// running hub and starts only the floors.
func (f *benchFlags) launcher(child *bench.ChildLauncher, scenarios map[string]bool) (bench.Launcher, error) {
	if f.hubURL == "" {
		child.Fleet = generatedFleet(f.pos, f.terminals, f.idle, f.storm)
		if onlyNodes(scenarios) {
			child.Fleet = nodesFleet(f.pos, f.terminals, f.nodes)
		}
		return child, nil
	}
	if f.hubConfig == "" {
		return nil, errors.New("bench: --hub-url needs --config, the running hub's configuration (for its credentials)")
	}
	cfg, err := config.Load(f.hubConfig, func(string) string { return "" })
	if err != nil {
		return nil, err
	}
	child.Fleet = bench.FleetFromConfig(cfg)
	ep := bench.Endpoint{Name: "hub", URL: f.hubURL, Fleet: child.Fleet}
	if f.hubPID > 0 {
		ep.Proc = bench.ExistingProc(f.hubPID)
	}
	return &bench.FixedLauncher{HubEndpoint: ep, Floors: child}, nil
}

// writeBenchReport prints the report, and writes it to out too if given;
// it fails if a scenario did not finish.
func writeBenchReport(res *bench.Results, stdout io.Writer, out string) error {
	res.Markdown(stdout)
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		res.Markdown(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("bench: %d scenario(s) did not finish", len(res.Errors))
	}
	return nil
}

// generatedFleet sizes the generated configuration: at least 100 merchants
// (one API key each) and enough terminals for the largest scenario, at
// least 100 per merchant (the replay drives 100 terminals of one key).
func generatedFleet(pos, terminals, idle, storm int) bench.Fleet {
	merchants := max(pos, 100)
	need := max(terminals, idle, storm)
	per := max((need+merchants-1)/merchants, min(terminals, 100))
	return bench.GenerateFleet(merchants, per)
}

// onlyNodes reports whether every scenario selected is a multi-node one.
func onlyNodes(scenarios map[string]bool) bool {
	for name := range scenarios {
		if name != "nodes" && name != "failover" {
			return false
		}
	}
	return len(scenarios) > 0
}

// nodesFleet sizes the configuration of a multi-node run to what it uses
// (every node loads it, and checks every terminal at start-up): one
// merchant per POS for each placement's closed loop, plus one per node for
// each placement's latency pairs, and enough terminals per merchant for
// --terminals over --pos POS.
func nodesFleet(pos, terminals, nodes int) bench.Fleet {
	pos = max(pos, 1)
	return bench.GenerateFleet(2*pos+2*max(nodes, 1), max((terminals+pos-1)/pos, 1))
}

// raiseFileLimit lifts the soft open-file limit to the hard one: 15,000
// connections need 15,000 descriptors. Children inherit the raised limit,
// each for itself.
func raiseFileLimit(stderr io.Writer) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintf(stderr, "bench: could not raise the open-file limit: %v\n", err)
			return
		}
	}
	fmt.Fprintf(stderr, "bench: open-file limit %d (each process)\n", lim.Cur)
}

// runFloorChild is the floor relay as a child process of the bench.
func runFloorChild(ctx context.Context, addr, redisURL, prefix string) error {
	store, err := redisx.Open(ctx, redisURL, 0)
	if err != nil {
		return err
	}
	defer store.Close()
	return bench.ServeFloor(ctx, addr, store.Client, prefix)
}

// allocsPath is where the allocation profile of a hub CPU-profiled to
// profile goes: "hub.prof" gives "hub.allocs.prof".
func allocsPath(profile string) string {
	ext := filepath.Ext(profile)
	return strings.TrimSuffix(profile, ext) + ".allocs" + ext
}

// profiledBetweenSignals runs a server (the hub's `serve`, or the floor
// relay) and profiles its CPU from SIGUSR1 to SIGUSR2 (or to the end), so
// that the profile covers the measured run only. When the CPU profile
// stops it also writes the allocations since the server started (warm-up
// included) beside it, as allocsPath(profile).
func profiledBetweenSignals(profile string, run func() error) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	var (
		mu      sync.Mutex
		f       *os.File
		stopped = make(chan struct{})
	)
	stopProfile := func() {
		mu.Lock()
		defer mu.Unlock()
		if f != nil {
			pprof.StopCPUProfile()
			_ = f.Close()
			f = nil
			if af, err := os.Create(allocsPath(profile)); err == nil {
				// The profile is as of the last completed GC: without one
				// now it would miss what the run allocated since then.
				runtime.GC()
				_ = pprof.Lookup("allocs").WriteTo(af, 0)
				_ = af.Close()
			}
		}
	}
	go func() {
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGUSR2 {
					stopProfile()
					continue
				}
				mu.Lock()
				if f == nil {
					if pf, err := os.Create(profile); err == nil && pprof.StartCPUProfile(pf) == nil {
						f = pf
					}
				}
				mu.Unlock()
			case <-stopped:
				return
			}
		}
	}()
	err := run()
	close(stopped)
	stopProfile()
	return err
}
