// Package gcfloor keeps the Go garbage collector from running on a small
// heap more often than it must, and never lets that put the next
// collection past the process's memory limit.
//
// The collector starts a cycle when the heap reaches its goal:
//
//	goal = live + (live + stacks + globals) × GOGC/100, at least 4 MiB × GOGC/100
//
// (live: what the last cycle left marked; 4 MiB is the runtime's minimum
// heap, which scales with GOGC). A hub carrying payments has a small live
// heap (a few MiB) and allocates a few tens of KiB per payment, so with the
// default GOGC of 100 it collects every hundred payments or so, and the
// cycles (mark workers, assists, sweeping) take a sizeable share of its
// CPU (docs/performance.md has the figures). gcfloor sets GOGC at start
// and after each cycle so that the goal is Headroom bytes above the live
// heap: GOGC = Headroom × 100 / max(live + stacks + globals, 4 MiB), never
// below 100. Before the first cycle the live heap is 0 and the floor of
// 4 MiB keeps the first goal at Headroom (64 MiB) rather than at GiBs.
// Once the live heap is large (many connections), GOGC is back at 100 and
// memory grows as it would without gcfloor.
//
// With a memory limit (Options.MemoryLimit, or GOMEMLIMIT: the lower of the
// two), the headroom is also at most the limit less the live heap, so the
// goal gcfloor sets is never above the limit; the runtime's own limit
// (debug.SetMemoryLimit) collects earlier still if the process's other
// memory needs it.
package gcfloor

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// Headroom is how far above the live heap gcfloor puts the next
// collection: never further, and no nearer while the live heap is small
// and the memory limit leaves room.
const Headroom = 64 << 20

// basePercent is GOGC once the live heap is large.
const basePercent = 100

// minHeap is the runtime's minimum heap at GOGC=100 (defaultHeapMinimum):
// the goal is never below minHeap × GOGC/100.
const minHeap = 4 << 20

// Options are what Start is told.
type Options struct {
	// MemoryLimit is a soft limit on the memory of the whole process in
	// bytes, with the semantics of GOMEMLIMIT (debug.SetMemoryLimit); 0:
	// none. When GOMEMLIMIT is set too, the lower of the two applies.
	MemoryLimit int64
}

// Start applies opts.MemoryLimit and, until stop is called, sets GOGC after
// each collection so that the next one starts Headroom above the live heap
// and never past the memory limit. GOGC set in the environment turns the
// GOGC tuning off (whoever set it chose how the process collects); the
// memory limit applies all the same. stop restores the memory limit that
// was in force before and GOGC 100.
func Start(opts Options) (stop func()) {
	prevLimit := debug.SetMemoryLimit(-1)
	if opts.MemoryLimit > 0 && opts.MemoryLimit < prevLimit {
		debug.SetMemoryLimit(opts.MemoryLimit)
	}
	if os.Getenv("GOGC") != "" {
		return func() { debug.SetMemoryLimit(prevLimit) }
	}
	t := &tuner{headroom: Headroom, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/gomemlimit:bytes"},
	}}
	t.adjust()
	t.arm()
	return func() {
		t.stopped.Store(true)
		debug.SetGCPercent(basePercent)
		debug.SetMemoryLimit(prevLimit)
	}
}

// Limit is the memory limit in force in bytes (memory_limit or
// GOMEMLIMIT), 0 if none.
func Limit() int64 {
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		return l
	}
	return 0
}

type tuner struct {
	headroom uint64
	sample   []metrics.Sample
	percent  int // the GOGC set last; touched only by adjust, which runs in one finalizer at a time
	stopped  atomic.Bool
}

// sentinel is garbage on purpose: its finalizer runs after each cycle.
type sentinel struct{ _ [16]byte }

// arm makes a sentinel whose finalizer adjusts GOGC after the next cycle
// and arms the one after.
func (t *tuner) arm() {
	s := &sentinel{}
	runtime.SetFinalizer(s, func(*sentinel) {
		if t.stopped.Load() {
			return
		}
		t.adjust()
		t.arm()
	})
}

// adjust sets GOGC for the live heap the last cycle left (0 before the
// first) and the memory limit in force.
func (t *tuner) adjust() {
	metrics.Read(t.sample)
	var v [4]uint64
	for i, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return
		}
		v[i] = s.Value.Uint64()
	}
	live, roots, limit := v[0], v[1]+v[2], v[3]
	p := Percent(live, roots, headroomUnder(live, limit, t.headroom))
	// Once per cycle, and cheap (the heap lock, no stop of the world): set
	// it whenever it changes, so that the goal never lags above the limit.
	if p != t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
}

// headroomUnder is headroom, or less where a live heap of live bytes plus
// headroom would pass limit (math.MaxInt64 or more: no limit).
func headroomUnder(live, limit, headroom uint64) uint64 {
	if limit >= math.MaxInt64 {
		return headroom
	}
	if live >= limit {
		return 0
	}
	return min(headroom, limit-live)
}

// Percent is the GOGC whose heap goal is headroom bytes above a live heap
// of live bytes, roots being the stacks and globals the collector scanned
// last (the goal's formula counts them with the live heap), and never
// below the default's. live + roots count as minHeap at least: the runtime
// never sets a goal below minHeap × GOGC/100, so a smaller divisor (the 0
// of a process that has not collected yet) would put the goal at GiBs.
func Percent(live, roots, headroom uint64) int {
	p := headroom * 100 / max(live+roots, minHeap)
	if p < basePercent {
		return basePercent
	}
	return int(p)
}
