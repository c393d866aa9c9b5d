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
