package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/internal/redisproc"
)

// faultKind is what one round does.
type faultKind int

const (
	redisStall faultKind = iota // SIGSTOP Redis for 1–15 s, then SIGCONT
	redisKill                   // SIGKILL Redis, down 0–5 s, restart it (AOF brings the data back)
	hubKill                     // SIGKILL the hub, down 0–3 s, start it again
)

func (k faultKind) String() string {
	return [...]string{"redis-stall", "redis-kill", "hub-kill"}[k]
}

// recoveryTimeout bounds the wait for the hub to be ready after a fault.
const recoveryTimeout = 60 * time.Second

// faultClock says whether a fault is active: from the moment it is injected
// until the hub answers /readyz 200 again after it was undone.
type faultClock struct{ n atomic.Int32 }

func (f *faultClock) active() bool { return f.n.Load() > 0 }

// round is one fault as it happened, with wall-clock times.
type round struct {
	n         int
	kind      faultKind
	down      time.Duration // planned: the stall, or how long the process stays dead
	injected  time.Time
	undone    time.Time // SIGCONT sent / process launched again
	recovered time.Time // /readyz 200 again (zero: never within recoveryTimeout)
	// wedged: the hub was not ready recoveryTimeout after the fault was
	// undone, so the harness killed and restarted it to go on.
	wedged bool
	err    error
}

func (r round) String() string {
	s := fmt.Sprintf("round %2d %-11s %5.1fs: injected %s, undone %s", r.n, r.kind, r.down.Seconds(), clockTime(r.injected), clockTime(r.undone))
	if r.wedged {
		s += fmt.Sprintf(", hub NOT ready within %s: killed and restarted", recoveryTimeout)
	} else {
		s += fmt.Sprintf(", hub ready %s (+%.1fs)", clockTime(r.recovered), r.recovered.Sub(r.undone).Seconds())
	}
	if r.err != nil {
		s += ", error: " + r.err.Error()
	}
	return s
}

// faultInjector breaks Redis and the hub on a schedule.
type faultInjector struct {
	t      *testing.T
	redis  *redisproc.Server
	hub    *hubProcess
	clock  *faultClock
	rounds []round
}

// run plays n rounds spread evenly over total: round i starts in the
// middle of its slot, or 2 s after the previous one recovered if that is
// later. It returns when the last round is over and total has passed.
// Kinds are drawn from a shuffled bag of the three, so that each run of
// three rounds from the first holds one of each.
func (f *faultInjector) run(ctx context.Context, n int, total time.Duration) {
	start := time.Now()
	slot := total / time.Duration(n)
	next := start
	var bag []faultKind
	for i := 0; i < n; i++ {
		if len(bag) == 0 {
			bag = []faultKind{redisStall, redisKill, hubKill}
			rand.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
		}
		kind := bag[0]
		bag = bag[1:]
		at := start.Add(time.Duration(i)*slot + slot/2)
		if at.Before(next) {
			at = next
		}
		if client.SleepContext(ctx, time.Until(at)) != nil { // the schedule
			return
		}
		r := f.play(i+1, kind)
		f.t.Log(r)
		f.rounds = append(f.rounds, r)
		next = time.Now().Add(2 * time.Second)
	}
	_ = client.SleepContext(ctx, time.Until(start.Add(total))) // the schedule
}

// play injects one fault, undoes it, and waits for the hub to be ready.
func (f *faultInjector) play(n int, kind faultKind) round {
	r := round{n: n, kind: kind}
	f.clock.n.Add(1)
	defer f.clock.n.Add(-1)
	r.injected = time.Now()
	switch kind {
	case redisStall:
		r.down = time.Second + rand.N(14*time.Second)
		if r.err = f.redis.Stall(); r.err == nil {
			time.Sleep(r.down) // the fault's schedule
			r.err = f.redis.Resume()
		}
	case redisKill:
		r.down = rand.N(5 * time.Second)
		if r.err = f.redis.Kill(); r.err == nil {
			time.Sleep(r.down) // the fault's schedule
			r.err = f.redis.Restart()
		}
	case hubKill:
		r.down = rand.N(3 * time.Second)
		r.undone, r.err = f.hub.restartAfter(r.down)
	}
	if kind != hubKill {
		r.undone = time.Now()
	}
	if f.hub.waitReady(recoveryTimeout) {
		r.recovered = time.Now()
		return r
	}
	// A hub that does not come back by itself is a finding; restarting it
	// lets the run go on and the checks see what it left behind.
	r.wedged = true
	if _, err := f.hub.restartAfter(0); err != nil && r.err == nil {
		r.err = err
	}
	r.recovered = time.Now()
	return r
}

// wedged lists the rounds after which the hub did not recover by itself.
func (f *faultInjector) wedged() []round {
	var rs []round
	for _, r := range f.rounds {
		if r.wedged {
			rs = append(rs, r)
		}
	}
	return rs
}

// counts is the number of rounds of each kind.
func (f *faultInjector) counts() map[faultKind]int {
	c := map[faultKind]int{}
	for _, r := range f.rounds {
		c[r.kind]++
	}
	return c
}

// during names the kind of fault whose window (from injection to two
// seconds after recovery) holds at, or "no fault".
func (f *faultInjector) during(at time.Time) string {
	for _, r := range f.rounds {
		if !at.Before(r.injected) && !at.After(r.recovered.Add(2*time.Second)) {
			return r.kind.String()
		}
	}
	return "no fault"
}
