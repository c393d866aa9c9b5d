package hub_test

// Tests of a connection's lazy writer: frames queued from many goroutines,
// replayed frames behind the greeting, the slow-peer rule, and no writer
// goroutine while a connection has nothing to send.

import (
	"bytes"
	"context"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/termhub/termhub/hub"
	"github.com/termhub/termhub/protocol"
	"github.com/termhub/termhub/session"
)

// Functions whose frames identify the hub's goroutines in a stack dump.
const (
	writerFunc = "github.com/termhub/termhub/hub.(*conn).writeQueued("
	readerFunc = "github.com/termhub/termhub/hub.(*Hub).readConn("
	serverFunc = "net/http.(*conn).serve(" // net/http's goroutine of a server connection
)

// probe is a frame a test sends to a terminal through Hub.SendTerminal.
type probe struct {
	Action   string `json:"action"` // "probe"
	Producer int    `json:"producer"`
	Seq      int    `json:"seq"`
	Pad      string `json:"pad,omitempty"`
}

func (p probe) TerminalAction() string { return p.Action }

// goroutines counts the goroutines with a frame of fn in their stack.
func goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}

// resendEngine is an engine that only resumes terminals: each connecting
// terminal is re-sent cmds. Other methods are not called by these tests.
type resendEngine struct {
	hub.Engine
	cmds []session.TerminalCommand
}

func (e resendEngine) TerminalConnected(context.Context, string, string, string) ([]session.TerminalCommand, error) {
	return e.cmds, nil
}

func (e resendEngine) TerminalDropped(context.Context, string, string, time.Time) error { return nil }

func TestIdleConnectionHasNoWriter(t *testing.T) {
	th := newTestHub(t)
	t1 := th.terminal(t, "T1")
	th.terminal(t, "T2")
	th.pos(t, "pk2")

	// Once the greetings are out, an idle connection is one reader
	// goroutine: no writer, and no net/http goroutine behind the upgrade.
	idle := func() bool {
		return goroutines(writerFunc) == 0 && goroutines(readerFunc) == 3 && goroutines(serverFunc) == 0
	}
	eventually(t, "three readers, no writer and no net/http goroutine", idle)

	// A frame to send starts a writer, which goes once the frame is out.
	th.SendTerminal("T1", []session.TerminalCommand{probe{Action: "probe", Seq: 1}})
	if m := t1.expect(t, "probe"); decodeMap(t, m.Raw)["seq"] != float64(1) {
		t.Fatalf("got %s, want probe 1", m.Raw)
	}
	eventually(t, "the writer to end after its frame", idle)
}

func TestFramesFromManyGoroutinesKeepEachOnesOrder(t *testing.T) {
	const producers, frames = 4, 250
	// Room for every frame: this test is about order, not about slow peers.
	th := newTestHub(t, func(o *hub.Options) { o.TerminalQueue = producers * frames })
	term := th.terminal(t, "T1")

	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < frames; {
				// One frame a call, or a few: both queue in call order.
				var batch []session.TerminalCommand
				for n := 1 + i%3; n > 0 && i < frames; n-- {
					batch = append(batch, probe{Action: "probe", Producer: p, Seq: i})
					i++
				}
				th.SendTerminal("T1", batch)
			}
		}()
	}
	next := make([]int, producers)
	for range producers * frames {
		var got probe
		if err := term.expect(t, "probe").Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Producer < 0 || got.Producer >= producers || got.Seq != next[got.Producer] {
			t.Fatalf("got frame %d of producer %d, want the producers' frames in order (next %v)", got.Seq, got.Producer, next)
		}
		next[got.Producer]++
	}
	wg.Wait()
	if !term.alive() {
		t.Fatal("the terminal was disconnected")
	}
}

func TestResentCommandsFollowTheGreeting(t *testing.T) {
	// Far more commands than the terminal's live queue (16) and the replay
	// queue hold: re-sends wait for the writer instead of kicking the
	// terminal as slow, and the greeting stays the first frame.
	const open = 100
	cmds := make([]session.TerminalCommand, open)
	for i := range cmds {
		cmds[i] = probe{Action: "probe", Seq: i}
	}
	th := newTestHub(t, func(o *hub.Options) { o.Engine = resendEngine{cmds: cmds} })
	for round := range 10 {
		// DialTerminal fails unless the first frame is the greeting.
		term := th.terminal(t, "T1")
		for i := range open {
			var got probe
			if err := term.expect(t, "probe").Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Seq != i {
				t.Fatalf("round %d: got command %d, want %d", round, got.Seq, i)
			}
		}
		if !term.alive() {
			t.Fatalf("round %d: the terminal was disconnected", round)
		}
		_ = term.conn.CloseNow()
		eventually(t, "the terminal's connection to end", func() bool { return len(th.Connections()) == 0 })
	}
}

func TestSlowPeerIsDisconnected(t *testing.T) {
	const queue = 4
	th := newTestHub(t, func(o *hub.Options) { o.TerminalQueue = queue })
	ws := th.rawTerminal(t, "T1")

	// The peer reads nothing more: once the sockets' buffers are full (a
	// few MiB on loopback) the writer waits and the next frames fill the
	// queue; the one after that disconnects the peer. (A tiny receive
	// buffer would fill sooner but makes reading back crawl: with
	// loopback's 64 KiB segments the window reopens only by probes.)
	pad := strings.Repeat("x", 32<<10)
	const most = 4000 // 128 MiB: far more than the buffers hold
	sent := 0
	for !th.logged(map[string]any{"message": "send queue full: disconnecting slow peer", "deviceId": "T1", "queue": float64(queue)}) {
		if sent == most {
			t.Fatalf("%d frames to a peer that reads none, and it is not disconnected", sent)
		}
		th.SendTerminal("T1", []session.TerminalCommand{probe{Action: "probe", Seq: sent, Pad: pad}})
		sent++
	}

	// Reading again, the peer gets the frames written before the kick, in
	// order, then the forceDisconnect and the close code.
	read := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, data, err := ws.Read(ctx)
		return data, err
	}
	for seq := 0; ; seq++ {
		data, err := read()
		if err != nil {
			t.Fatalf("read after %d frames: %v", seq, err)
		}
		m := decodeMap(t, data)
		if m["action"] == protocol.ActionForceDisconnect {
			want := map[string]any{"action": protocol.ActionForceDisconnect, "reason": protocol.ReasonOther,
				"message": "Connection too slow to receive messages", "reconnectAllowed": true}
			if !reflect.DeepEqual(m, want) {
				t.Fatalf("got %s, want exactly %s", data, mustJSON(t, want))
			}
			if seq > sent-queue-1 {
				t.Fatalf("%d of %d frames written before the kick, want the last %d or more still queued", seq, sent, queue+1)
			}
			break
		}
		if m["action"] != "probe" || m["seq"] != float64(seq) {
			t.Fatalf("got %.100s, want probe %d", data, seq)
		}
	}
	_, err := read()
	if got := websocket.CloseStatus(err); got != websocket.StatusCode(protocol.ClosePolicy) {
		t.Fatalf("after the forceDisconnect: %v (close code %d), want close code %d", err, got, protocol.ClosePolicy)
	}
	eventually(t, "the slow terminal to be unregistered", func() bool {
		return th.TerminalStatus("T1") == protocol.TerminalReconnecting
	})
}

// liveDuringResume is an engine under which a command is sent live to a
// connecting terminal while its open commands are read (a sale committed
// then), and is found open as well.
type liveDuringResume struct {
	hub.Engine
	h    **hub.Hub
	live probe
	more probe
}

func (e liveDuringResume) TerminalConnected(_ context.Context, _, deviceID, _ string) ([]session.TerminalCommand, error) {
	(*e.h).SendTerminal(deviceID, []session.TerminalCommand{e.live})
	return []session.TerminalCommand{e.live, e.more}, nil
}

func (e liveDuringResume) TerminalDropped(context.Context, string, string, time.Time) error {
	return nil
}

// TestCommandSentLiveDuringResumeIsSentOnce: a command that reaches a
// connecting terminal live while its open commands are read is not sent
// again with them; the other open commands still are.
func TestCommandSentLiveDuringResumeIsSentOnce(t *testing.T) {
	var h *hub.Hub
	live, more := probe{Action: "probe", Seq: 1}, probe{Action: "probe", Seq: 2}
	th := newTestHub(t, func(o *hub.Options) { o.Engine = liveDuringResume{h: &h, live: live, more: more} })
	h = th.Hub
	term := th.terminal(t, "T1")
	for _, want := range []int{1, 2, 3} {
		if want == 3 {
			th.SendTerminal("T1", []session.TerminalCommand{probe{Action: "probe", Seq: 3}})
		}
		var got probe
		if err := term.expect(t, "probe").Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Seq != want {
			t.Fatalf("got probe %d, want %d (the live command once, then the other open one, then a later one)", got.Seq, want)
		}
	}
	// Once resumed, a live command equal to a resumed one is sent again:
	// only a copy sent during the resume is left out.
	th.SendTerminal("T1", []session.TerminalCommand{more})
	var got probe
	if err := term.expect(t, "probe").Decode(&got); err != nil || got.Seq != 2 {
		t.Fatalf("live re-send after the resume: %+v, %v; want probe 2", got, err)
	}
}
