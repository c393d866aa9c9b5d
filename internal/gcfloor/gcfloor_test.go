package gcfloor

import (
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
)

// goal is the heap goal the runtime derives from GOGC percent, a live heap
// of live bytes and roots bytes of stacks and globals, without a memory
// limit (runtime gcControllerState.commit, Go 1.21 on).
func goal(live, roots uint64, percent int) uint64 {
	g := live + (live+roots)*uint64(percent)/100
	return max(g, minHeap*uint64(percent)/100)
}

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, roots, headroom uint64
		want                  int
	}{
		{4 << 20, 0, 64 << 20, 1600},          // a small heap: the next cycle 64 MiB on
		{3 << 20, 1 << 20, 64 << 20, 1600},    // stacks and globals count with it
		{64 << 20, 0, 64 << 20, 100},          // at the headroom: the default
		{512 << 20, 0, 64 << 20, 100},         // a large heap: never below the default
		{0, 0, 64 << 20, 1600},                // no cycle yet: as a 4 MiB heap, not 100000 (a 4 GiB goal)
		{1 << 20, 0, 64 << 20, 1600},          // below the runtime's minimum heap: as 4 MiB
		{8 << 20, 0, 32 << 20, 400},           // a headroom cut by a memory limit
		{8 << 20, 0, 0, 100},                  // no room left under the limit: the default
		{100 << 20, 28 << 20, 256 << 20, 200}, // a larger headroom
	} {
		if got := Percent(c.live, c.roots, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", c.live, c.roots, c.headroom, got, c.want)
		}
	}
}

// TestGoalNeverPastHeadroomOrLimit checks the goal the runtime derives from
// the GOGC gcfloor sets: never more than Headroom above the live heap, and
// never above the memory limit while GOGC is raised. The old Percent gave
// 100000 for a live heap of 0, a goal of 4 GiB (4 MiB × 1000), and for a
// live heap of 1 MiB a goal of 256 MiB (the minimum heap scales with GOGC).
func TestGoalNeverPastHeadroomOrLimit(t *testing.T) {
	sizes := []uint64{0, 1 << 10, 1 << 20, 3 << 20, 4 << 20, 5 << 20, 20 << 20, 63 << 20, 64 << 20, 100 << 20, 1 << 30}
	limits := []uint64{math.MaxInt64, 32 << 20, 64 << 20, 70 << 20, 128 << 20, 1 << 30}
	for _, live := range sizes {
		for _, roots := range []uint64{0, 300 << 10, 2 << 20} {
			for _, limit := range limits {
				p := Percent(live, roots, headroomUnder(live, limit, Headroom))
				g := goal(live, roots, p)
				if p == basePercent {
					continue // the default: the runtime's memory limit is what bounds it
				}
				if g > live+Headroom {
					t.Errorf("live %d roots %d limit %d: GOGC %d, goal %d is more than Headroom above the live heap", live, roots, limit, p, g)
				}
				if g > limit {
					t.Errorf("live %d roots %d limit %d: GOGC %d, goal %d is past the limit", live, roots, limit, p, g)
				}
			}
		}
	}
}

// TestStartRaisesGOGC runs real collections and checks that GOGC follows
// the small live heap of a test process after them, and is the default
// again after stop.
func TestStartRaisesGOGC(t *testing.T) {
	t.Setenv("GOGC", "") // an empty value counts as unset
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	stop := Start(Options{})
	for range 3 {
		runtime.GC() // the finalizer of the cycle's sentinel adjusts GOGC
	}
	// Finalizers run in their own goroutine: one more cycle and a wait for
	// the finalizer queue to run make sure the last adjustment happened.
	runtime.GC()
	waitFinalizers()
	if p := debug.SetGCPercent(-1); p <= 100 {
		debug.SetGCPercent(p)
		t.Fatalf("GOGC %d after collections of a small heap, want more than 100", p)
	} else {
		debug.SetGCPercent(p)
	}
	stop()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC %d after stop, want 100", p)
	}
}

// waitFinalizers returns once the finalizers queued so far have run: a
// finalizer queued after them signals.
func waitFinalizers() {
	done := make(chan struct{})
	s := &sentinel{}
	runtime.SetFinalizer(s, func(*sentinel) { close(done) })
	s = nil
	runtime.GC()
	<-done
}

func TestStartRespectsGOGC(t *testing.T) {
	t.Setenv("GOGC", "50")
	old := debug.SetGCPercent(50)
	defer debug.SetGCPercent(old)
	oldLimit := debug.SetMemoryLimit(-1)
	stop := Start(Options{MemoryLimit: 1 << 40})
	runtime.GC()
	waitFinalizers()
	if p := debug.SetGCPercent(50); p != 50 {
		t.Fatalf("GOGC %d with GOGC=50 in the environment, want it left alone", p)
	}
	if l, want := debug.SetMemoryLimit(-1), min(oldLimit, 1<<40); l != want {
		t.Fatalf("memory limit %d with GOGC set, want %d", l, want)
	}
	stop()
	if l := debug.SetMemoryLimit(-1); l != oldLimit {
		t.Fatalf("memory limit %d after stop, want %d again", l, oldLimit)
	}
}

// The tests below run in a fresh process (this test binary again, with
// childEnv naming the test), where no collection has run yet when Start is
// called, as in a hub just started: that is where a GOGC computed from a
// live heap of 0, without the 4 MiB floor, would let the first collection
// wait for a heap of GiBs.

const childEnv = "GCFLOOR_TEST_CHILD"

func init() {
	if os.Getenv(childEnv) != "" {
		// No collection before the test calls Start (a test binary under
		// -race may reach the default 4 MiB goal while starting).
		debug.SetGCPercent(-1)
	}
}

// inChild runs the test in a fresh process with env added and reports
// whether this is that process (which then runs the test's body).
func inChild(t *testing.T, env ...string) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+t.Name())...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("in a fresh process: %v\n%s", err, out)
	}
	t.Logf("in a fresh process:\n%s", out)
	return false
}

var sink []byte

// churn allocates n bytes of garbage in 4 KiB pieces, checking after each
// MiB that the heap goal is at most maxGoal.
func churn(t *testing.T, n int, maxGoal uint64) {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	for i := 0; i < n; i += 4 << 10 {
		sink = make([]byte, 4<<10)
		if i%(1<<20) == 0 {
			metrics.Read(s)
			if g := s[0].Value.Uint64(); g > maxGoal {
				t.Fatalf("heap goal %d MiB after %d MiB of garbage, want at most %d MiB", g>>20, i>>20, maxGoal>>20)
			}
		}
	}
}

func read(names ...string) []uint64 {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	v := make([]uint64, len(s))
	for i := range s {
		v[i] = s[i].Value.Uint64()
	}
	return v
}

// TestFreshProcessCollects: right after Start in a process that has not
// collected yet, 256 MiB of small garbage must be collected several times
// over with a heap goal of about Headroom. The old gcfloor, tuning from a
// live heap of 0, set GOGC 100000: a first goal of 4 GiB and no collection
// at all here.
func TestFreshProcessCollects(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	if !inChild(t) {
		return
	}
	if n := read("/gc/cycles/total:gc-cycles")[0]; n != 0 {
		t.Fatalf("%d collections before Start, want none", n)
	}
	stop := Start(Options{})
	defer stop()
	if g := read("/gc/heap/goal:bytes")[0]; g > Headroom+minHeap {
		t.Fatalf("first heap goal %d MiB, want about %d MiB", g>>20, Headroom>>20)
	}
	// The goal may pass 2×Headroom for a moment: the tuner sets GOGC from a
	// finalizer that runs after each cycle, and until it has run the
	// runtime's goal for the new live heap uses the previous GOGC; on a
	// loaded machine (every package's tests at once) the finalizer runs
	// late. 3×Headroom leaves room for that and still fails a tuning that
	// sets no goal near Headroom, which the count of collections below
	// catches too.
	churn(t, 256<<20, 3*Headroom)
	if n := read("/gc/cycles/automatic:gc-cycles")[0]; n < 2 {
		t.Fatalf("%d collections over 256 MiB of garbage, want 2 or more", n)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("%d cycles, next_gc %d MiB, GOGC %d", ms.NumGC, ms.NextGC>>20, read("/gc/gogc:percent")[0])
}

// TestFreshProcessUnderLimit: with a memory limit below Headroom, the
// goal gcfloor sets (GOGC's, without the runtime's limit) is never above
// the limit, and garbage is collected.
func TestFreshProcessUnderLimit(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	if !inChild(t) {
		return
	}
	const limit = 40 << 20
	stop := Start(Options{MemoryLimit: limit})
	defer stop()
	if l := Limit(); l != limit {
		t.Fatalf("Limit() = %d, want %d", l, limit)
	}
	for range 8 {
		churn(t, 32<<20, limit)
		waitFinalizers()
		v := read("/gc/gogc:percent", "/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes")
		if g := goal(v[1], v[2]+v[3], int(v[0])); v[0] > basePercent && g > limit {
			t.Fatalf("GOGC %d on a live heap of %d: a goal of %d MiB, past the %d MiB limit", v[0], v[1], g>>20, limit>>20)
		}
	}
	if n := read("/gc/cycles/automatic:gc-cycles")[0]; n < 4 {
		t.Fatalf("%d collections over 256 MiB of garbage under a 40 MiB limit", n)
	}
}

// TestGOMEMLIMITKeepsTuning: GOMEMLIMIT in the environment does not turn
// the tuning off; the lower of it and Options.MemoryLimit applies.
func TestGOMEMLIMITKeepsTuning(t *testing.T) {
	t.Setenv("GOGC", "")
	if !inChild(t, "GOMEMLIMIT=48MiB") {
		return
	}
	debug.SetGCPercent(100) // as in a hub just started (init turned it off)
	stop := Start(Options{MemoryLimit: 1 << 30})
	if l := Limit(); l != 48<<20 {
		t.Fatalf("Limit() = %d with GOMEMLIMIT=48MiB and 1 GiB asked for, want 48 MiB", l)
	}
	if p := int64(read("/gc/gogc:percent")[0]); p <= basePercent {
		t.Fatalf("GOGC %d with GOMEMLIMIT set, want the tuning on (more than 100)", p)
	}
	stop()
	stop = Start(Options{MemoryLimit: 32 << 20})
	defer stop()
	if l := Limit(); l != 32<<20 {
		t.Fatalf("Limit() = %d with GOMEMLIMIT=48MiB and 32 MiB asked for, want 32 MiB", l)
	}
}
