package bench

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Summary is the distribution of a set of durations.
type Summary struct {
	N             int
	P50, P99, Max time.Duration
	Mean          time.Duration
}

// Percentile returns the q-quantile (0 < q ≤ 1) of sorted by the
// nearest-rank method: the smallest value with at least q of the samples at
// or below it. It is 0 for no samples.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted)) + 0.999999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Summarize sorts a copy of d and summarises it.
func Summarize(d []time.Duration) Summary {
	s := slices.Clone(d)
	slices.Sort(s)
	out := Summary{N: len(s)}
	if len(s) == 0 {
		return out
	}
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	out.P50, out.P99, out.Max, out.Mean = Percentile(s, 0.50), Percentile(s, 0.99), s[len(s)-1], sum/time.Duration(len(s))
	return out
}

// String is "p50 1.23 ms · p99 4.56 ms · max 7.89 ms (n=100)".
func (s Summary) String() string {
	if s.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s · p99 %s · max %s (n=%d)", ms(s.P50), ms(s.P99), ms(s.Max), s.N)
}

// Short is "p50 1.23 ms · p99 4.56 ms".
func (s Summary) Short() string {
	if s.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s · p99 %s", ms(s.P50), ms(s.P99))
}

// ms renders d in milliseconds with two or three significant decimals.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

// Recorder collects durations from several goroutines.
type Recorder struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
}

// Values returns a copy of what was recorded so far.
func (r *Recorder) Values() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.d)
}

// Summary summarises what was recorded so far.
func (r *Recorder) Summary() Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Summarize(r.d)
}

// BurstWindow is the width of the windows Bursts counts in.
const BurstWindow = 100 * time.Millisecond

// Bursts tells where in time an open loop's slowest payments fell: spread
// over the run (a cost every payment risks) or gathered in a few windows
// (a stall that many payments met at once: a collection, a slow Redis, the
// machine busy with something else). The windows are BurstWindow wide, by
// each payment's scheduled time.
type Bursts struct {
	Slow    int // payments with a round trip at or above the p99
	Windows int // windows holding at least one of them
	Of      int // windows holding any payment
	Busiest int // the most of them in one window
}

// String is "12 at or over the p99, in 3 of 40 windows of 100 ms; the
// busiest held 7".
func (b Bursts) String() string {
	if b.Of == 0 {
		return "no samples"
	}
	return fmt.Sprintf("%d at or over the p99, in %d of %d windows of %s; the busiest held %d", b.Slow, b.Windows, b.Of, ms(BurstWindow), b.Busiest)
}

// timedSample is a round trip and when its payment was due (nowNS).
type timedSample struct {
	at int64
	d  time.Duration
}

// timedSamples collects timed samples from several goroutines.
type timedSamples struct {
	mu sync.Mutex
	s  []timedSample
}

func (t *timedSamples) add(at int64, d time.Duration) {
	t.mu.Lock()
	t.s = append(t.s, timedSample{at, d})
	t.mu.Unlock()
}

func (t *timedSamples) values() []timedSample {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.s)
}

// findBursts counts where the samples at or above p99 (their p99) fell, in
// windows of width w.
func findBursts(samples []timedSample, p99, w time.Duration) Bursts {
	if len(samples) == 0 || w <= 0 {
		return Bursts{}
	}
	all := map[int64]bool{}
	slow := map[int64]int{}
	var b Bursts
	for _, x := range samples {
		win := x.at / int64(w)
		all[win] = true
		if x.d >= p99 {
			b.Slow++
			slow[win]++
			b.Busiest = max(b.Busiest, slow[win])
		}
	}
	b.Windows, b.Of = len(slow), len(all)
	return b
}
