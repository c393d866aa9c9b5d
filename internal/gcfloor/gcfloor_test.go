package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{4 << 20, 64 << 20, 1600},  // a small heap: the next cycle 64 MiB on
		{64 << 20, 64 << 20, 100},  // at the headroom: the default
		{512 << 20, 64 << 20, 100}, // a large heap: never below the default
		{0, 64 << 20, 100_000},     // no live heap yet: capped
	} {
		if got := Percent(c.live, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
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
	stop := Start()
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
	stop := Start()
	defer stop()
	runtime.GC()
	waitFinalizers()
	if p := debug.SetGCPercent(50); p != 50 {
		t.Fatalf("GOGC %d with GOGC=50 in the environment, want it left alone", p)
	}
}
