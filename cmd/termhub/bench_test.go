package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// benchChildEnv makes this test binary act as the termhub binary: the
// bench starts its hubs as children of os.Executable, which under `go
// test` is the test binary. (Not TERMHUB_…: the bench strips those from a
// child's environment.)
const benchChildEnv = "BENCH_TEST_AS_TERMHUB"

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchNodes runs `termhub bench --nodes 3` with the nodes and failover
// scenarios at a tiny size on REDIS_URL, so that the multi-node path (three
// child hubs on one Redis, both placements, a kill -9 and the terminals'
// reconnect) runs in CI. It checks that the report has both scenarios and
// that nothing was lost or doubled; it asserts nothing about timings.
func TestBenchNodes(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set: the multi-node bench needs a Redis the child hubs share (e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
	}
	t.Setenv(benchChildEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, log bytes.Buffer
	err := benchMain(ctx, []string{"--redis", url, "--nodes", "3", "--scenario", "nodes,failover",
		"--payments", "30", "--rounds", "6", "--warmup", "3", "--terminals", "12", "--pos", "3",
		"--duration", "1s", "--load-rounds", "2", "--node-timeout", "2s", "--card-delay", "200ms", "--settle", "0"}, &out, &log)
	if err != nil {
		t.Fatalf("bench: %v\nreport:\n%s\nlog:\n%s", err, out.String(), log.String())
	}
	report := out.String()
	for _, want := range []string{"7 nodes (3)", "cross ÷ same, p50", "8 failover (3 nodes, node_timeout 2s)", "every payment in flight final"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for _, line := range strings.Split(report, "\n") {
		if strings.Contains(line, "lost / duplicated") && !strings.Contains(line, "| met |") {
			t.Errorf("finals lost or doubled: %s", line)
		}
	}
}
