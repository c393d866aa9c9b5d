package clock

import (
	"testing"
	"time"
)

func TestFakeRunsTimersInOrderAtTheirDeadline(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	c := NewFake(start)
	var got []time.Duration
	c.AfterFunc(3*time.Second, func() { got = append(got, c.Now().Sub(start)) })
	c.AfterFunc(1*time.Second, func() {
		got = append(got, c.Now().Sub(start))
		c.AfterFunc(time.Second, func() { got = append(got, c.Now().Sub(start)) }) // due at 2s
	})
	stopped := c.AfterFunc(2500*time.Millisecond, func() { t.Error("stopped timer ran") })
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	c.Advance(5 * time.Second)
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ran %v, want %v", got, want)
		}
	}
	if c.Now().Sub(start) != 5*time.Second {
		t.Fatalf("now = %v after Advance(5s)", c.Now().Sub(start))
	}
	if c.Pending() != 0 {
		t.Fatalf("%d timers still pending", c.Pending())
	}
}

func TestFakeLeavesFutureTimers(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	ran := false
	c.AfterFunc(time.Minute, func() { ran = true })
	c.Advance(59 * time.Second)
	if ran || c.Pending() != 1 {
		t.Fatalf("timer due in 60s ran after 59s (ran=%v pending=%d)", ran, c.Pending())
	}
	c.Advance(time.Second)
	if !ran {
		t.Fatal("timer due in 60s did not run at 60s")
	}
}
