package bench

import "testing"

// The throughput run's profile goes where --cpuprofile says; every other
// scenario's gets its name before the extension, so runs never overwrite
// each other's profiles.
func TestProfilePath(t *testing.T) {
	for _, c := range []struct{ base, name, want string }{
		{"/tmp/hub.prof", "throughput", "/tmp/hub.prof"},
		{"/tmp/hub.prof", "latency", "/tmp/hub-latency.prof"},
		{"hub", "latency", "hub-latency"},
		{"/tmp/a.b/hub.pprof", "latency", "/tmp/a.b/hub-latency.pprof"},
	} {
		if got := ProfilePath(c.base, c.name); got != c.want {
			t.Errorf("ProfilePath(%q, %q) = %q, want %q", c.base, c.name, got, c.want)
		}
	}
}
