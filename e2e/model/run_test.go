package model

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- running sequences ----

type outcome struct {
	seed  uint64
	steps []string
	viol  []violation
}

func (o outcome) kinds() []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range o.viol {
		if !seen[v.kind] {
			seen[v.kind] = true
			out = append(out, v.kind)
		}
	}
	sort.Strings(out)
	return out
}

func (o outcome) report(variant string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s sequence, seed %d: %d violation(s)\n", variant, o.seed, len(o.viol))
	for i, v := range o.viol {
		if i == 10 {
			fmt.Fprintf(&b, "  … %d more\n", len(o.viol)-10)
			break
		}
		fmt.Fprintf(&b, "  [%s] %s\n", v.kind, v.msg)
	}
	b.WriteString("steps:\n")
	for _, s := range o.steps {
		b.WriteString("  " + s + "\n")
	}
	fmt.Fprintf(&b, "reproduce: TERMHUB_SOAK_SEED=%d TERMHUB_SOAK_SEQUENCES=1 go test ./e2e/model/ -run '%s' -v\n", o.seed, testNameOf(variant))
	return b.String()
}

func testNameOf(variant string) string {
	switch variant {
	case "socket":
		return "TestModelSockets$"
	case "nodes":
		return "TestModelNodes$"
	}
	return "TestModelEngine$"
}

// runSequence plays one seeded sequence on be.
func runSequence(seed uint64, steps int, be backend, nKeys int, storeEveryStep bool) outcome {
	w := newWorld(seed, be, nKeys)
	be.bind(w)
	w.storeEveryStep = storeEveryStep
	for i := 0; i < steps && len(w.viol) == 0; i++ {
		w.step()
	}
	if len(w.viol) == 0 {
		w.finish()
	}
	return outcome{seed: seed, steps: w.steps, viol: w.viol}
}

// knownBugs are violations already reported (see the scenarios in
// scenarios_test.go); sequences that show only these are skipped with
// "BUG: …" unless TERMHUB_MODEL_STRICT=1. Remove an entry when it is fixed.
var knownBugs = map[string]string{
	// Both bugs the model found are fixed (session/machine.go): a lapsed,
	// unconfirmed auto-void is sent again when the approval repeats, and a
	// late voidResult ok voids the sale. Add an entry here only while a
	// newly found violation is being fixed.
}

func onlyKnown(o outcome) (bool, string) {
	if os.Getenv("TERMHUB_MODEL_STRICT") != "" {
		return false, ""
	}
	var why []string
	for _, k := range o.kinds() {
		b, ok := knownBugs[k]
		if !ok {
			return false, ""
		}
		why = append(why, b)
	}
	return len(why) > 0, strings.Join(why, "; ")
}

// plan is how many sequences a test runs and from which seed.
type plan struct {
	n      int
	seed   uint64
	steps  int
	soak   bool
	random bool
}

func planFor(t *testing.T, defaultN int, soakDivisor int, overrideEnv string) plan {
	p := plan{n: defaultN, steps: 40}
	if s := os.Getenv("TERMHUB_MODEL_STEPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("TERMHUB_MODEL_STEPS=%q: want a positive number", s)
		}
		p.steps = n
	}
	if s := os.Getenv("TERMHUB_SOAK_SEQUENCES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("TERMHUB_SOAK_SEQUENCES=%q: want a positive number", s)
		}
		p.soak, p.n = true, max(1, n/soakDivisor)
	}
	if s := os.Getenv(overrideEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", overrideEnv, s)
		}
		p.soak, p.n = true, n
	}
	if s := os.Getenv("TERMHUB_SOAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TERMHUB_SOAK_SEED=%q: want an unsigned number", s)
		}
		p.seed = v
	} else {
		p.seed, p.random = rand.Uint64()>>1, true
	}
	return p
}

// soakWorkers is how many sequences run at once: one by default (the
// default run stays light next to other packages' tests), def in a soak,
// TERMHUB_SOAK_WORKERS if set.
func soakWorkers(p plan, def int) int {
	if s := os.Getenv("TERMHUB_SOAK_WORKERS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	if p.soak {
		return def
	}
	return 1
}

// summary collects the outcomes of many sequences.
type summary struct {
	mu      sync.Mutex
	runs    int
	steps   int
	known   map[string]int
	firstOf map[string]uint64
}

// add counts o; for a known-bug outcome it reports whether o is the first
// of one of its kinds.
func (s *summary) add(o outcome, known bool) (first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs++
	s.steps += len(o.steps)
	if s.known == nil {
		s.known, s.firstOf = map[string]int{}, map[string]uint64{}
	}
	if known {
		for _, k := range o.kinds() {
			s.known[k]++
			if _, ok := s.firstOf[k]; !ok {
				s.firstOf[k], first = o.seed, true
			}
		}
	}
	return first
}

func (s *summary) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := fmt.Sprintf("%d sequences, %d steps", s.runs, s.steps)
	kinds := make([]string, 0, len(s.known))
	for k := range s.known {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		out += fmt.Sprintf("; known bug %s in %d (first seed %d)", k, s.known[k], s.firstOf[k])
	}
	return out
}

// runMany runs p's sequences on workers goroutines, each sequence a subtest
// named by its seed so that `-run` can pick one.
func runMany(t *testing.T, variant string, p plan, workers int, one func(t *testing.T, seed uint64) outcome) {
	how := "random"
	if !p.random {
		how = "fixed"
	}
	t.Logf("%s: %d sequences of %d steps, base seed %d (%s; TERMHUB_SOAK_SEED=%d reproduces)", variant, p.n, p.steps, p.seed, how, p.seed)
	start := time.Now()
	var sum summary
	var failures sync.Mutex
	failed := 0
	next := make(chan uint64)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range next {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					o := one(t, seed)
					known := false
					if len(o.viol) > 0 {
						var why string
						known, why = onlyKnown(o)
						if known {
							if sum.add(o, true) {
								t.Skipf("BUG: %s\n%s", why, o.report(variant))
							}
							t.Skipf("BUG: %v (seed %d; the first sequence of each kind has the steps)", o.kinds(), o.seed)
						}
						failures.Lock()
						failed++
						failures.Unlock()
						t.Error(o.report(variant))
					}
					sum.add(o, false)
				})
			}
		}()
	}
	for i := 0; i < p.n; i++ {
		failures.Lock()
		stop := failed >= 5
		failures.Unlock()
		if stop {
			t.Logf("stopping after 5 failing sequences")
			break
		}
		next <- p.seed + uint64(i)
	}
	close(next)
	wg.Wait()
	el := time.Since(start)
	t.Logf("%s: %s in %s (%.1f ms/sequence, %s per 1000)", variant, sum.String(), el.Round(time.Millisecond),
		float64(el.Microseconds())/1000/float64(max(1, sum.runs)), (el / time.Duration(max(1, sum.runs)) * 1000).Round(time.Second))
}
