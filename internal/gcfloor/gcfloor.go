// Package gcfloor keeps the Go garbage collector from running on a small
// heap more often than it must.
//
// The collector starts a cycle when the heap has grown by GOGC percent
// (100) over what the last cycle left live. A hub carrying payments has a
// small live heap (a few MiB) and allocates a few tens of KiB per payment,
// so with the default it collects every hundred payments or so, and the
// cycles (mark workers, assists, sweeping) were a tenth of its CPU in the
// latency bench. gcfloor raises GOGC after each cycle so that the next one
// starts no sooner than Headroom bytes above the live heap; once the live
// heap is large (many connections), GOGC is back at 100 and memory grows
// as it would without gcfloor.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// Headroom is how far above the live heap the next collection starts, at
// least.
const Headroom = 64 << 20

// basePercent is GOGC once the live heap is large.
const basePercent = 100

// Start keeps collections Headroom apart until stop is called. It does
// nothing when GOGC or GOMEMLIMIT is set in the environment: whoever set
// them chose how the process collects.
func Start() (stop func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	t := &tuner{headroom: Headroom, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.adjust()
	t.arm()
	return func() {
		t.stopped.Store(true)
		debug.SetGCPercent(basePercent)
	}
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

// adjust sets GOGC for the live heap the last cycle left.
func (t *tuner) adjust() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := Percent(t.sample[0].Value.Uint64(), t.headroom)
	// Small changes are not worth the call.
	if t.percent == 0 || p > t.percent+t.percent/8 || p < t.percent-t.percent/8 {
		t.percent = p
		debug.SetGCPercent(p)
	}
}

// Percent is the GOGC that starts the next collection headroom bytes
// above a live heap of live bytes, and never below the default's.
func Percent(live, headroom uint64) int {
	if live == 0 {
		live = 1
	}
	p := headroom * 100 / live
	if p < basePercent {
		return basePercent
	}
	if p > 100_000 {
		return 100_000
	}
	return int(p)
}
