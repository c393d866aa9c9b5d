package session

import (
	"context"
	"hash/fnv"
	"slices"
	"sync"
)

// orderStripes is how many lines the API keys are spread over: a few keys
// sharing a line only order each other's commits more than they need.
const orderStripes = 4096

// ordering puts the commits of each API key in line: a commit takes its
// place in the lines of its keys before it is sent to Redis, and carries
// out its effects (the terminal's commands, the reply, the POS messages)
// only once every commit ahead of it in those lines has carried out its
// own or left. What this keeps:
//   - a terminal's answer cannot reach the POS before the reply to the
//     request that sent the terminal its command (the answer's commit
//     takes its place after that commit's, whose effects it waits for);
//   - POS messages reach the hub in the order the commits were made, and a
//     message whose number in the outbox is not the next one makes the
//     connection read the stream (hub delivery), so the POS still gets
//     them in stream order.
//
// Commits of one key are sent to Redis side by side, not one after the
// other: when one round trip is slow, those behind it wait for it once,
// where a lock held across the commit would make each of them wait for it
// and then take a round trip of its own in turn (docs/performance.md).
//
// Places are given out under one mutex for all lines, so a commit's places
// in several lines are taken at one moment: of any two commits, one is
// ahead of the other in every line they share, and waiting cannot go round
// in a circle.
type ordering struct {
	mu    sync.Mutex
	lines [orderStripes]orderLine
}

// orderLine is one stripe's line; guarded by ordering.mu.
type orderLine struct {
	next   uint64              // places given out
	served uint64              // places whose commit has carried out its effects or left
	left   map[uint64]struct{} // places given up out of turn, skipped when reached
	moved  chan struct{}       // closed when served moves on; nil when nobody waits
}

// place is a commit's places in the lines of its API keys.
type place struct {
	o     *ordering
	lines []int    // stripe of each key, without repeats
	at    []uint64 // the commit's place in each
	ended bool
	buf   [4]int // room for a commit's usual one or two keys
	abuf  [4]uint64
}

// stripe is the line of an API key.
func stripe(merchantID, apiKey string) int {
	h := fnv.New32a()
	h.Write([]byte(merchantID))
	h.Write([]byte{0})
	h.Write([]byte(apiKey))
	return int(h.Sum32() % orderStripes)
}

// take gives a commit its places in the lines of apiKeys.
func (o *ordering) take(merchantID string, apiKeys []string) *place {
	p := &place{o: o}
	p.lines, p.at = p.buf[:0], p.abuf[:0]
	for _, k := range apiKeys {
		if i := stripe(merchantID, k); !slices.Contains(p.lines, i) {
			p.lines = append(p.lines, i)
		}
	}
	o.mu.Lock()
	for _, i := range p.lines {
		l := &o.lines[i]
		p.at = append(p.at, l.next)
		l.next++
	}
	o.mu.Unlock()
	return p
}

// wait returns once every commit ahead of p in its lines has carried out
// its effects or left.
func (p *place) wait() { p.waitOr(nil) }

// waitOr is wait, unless stop closes first: it then reports false, and p
// must still be left.
func (p *place) waitOr(stop <-chan struct{}) bool {
	o := p.o
	o.mu.Lock()
	defer o.mu.Unlock()
	for j, i := range p.lines {
		l, at := &o.lines[i], p.at[j]
		for l.served != at {
			if l.moved == nil {
				l.moved = make(chan struct{})
			}
			moved := l.moved
			o.mu.Unlock()
			select {
			case <-moved:
			case <-stop:
				o.mu.Lock()
				return false
			}
			o.mu.Lock()
		}
	}
	return true
}

// done ends p's turn, after wait: the commits behind it may go on.
func (p *place) done() { p.end(true) }

// leave gives up p's places without waiting for its turn: a commit that
// carries out nothing (refused, conflicting, failed). The lines skip them
// when their turn comes.
func (p *place) leave() { p.end(false) }

// end moves the lines past p's places: at once where its turn has come
// (always, when inTurn), otherwise when it comes.
func (p *place) end(inTurn bool) {
	if p.ended {
		return
	}
	p.ended = true
	o := p.o
	o.mu.Lock()
	defer o.mu.Unlock()
	for j, i := range p.lines {
		l, at := &o.lines[i], p.at[j]
		switch {
		case l.served == at:
			l.advanceLocked()
		case inTurn:
			panic("session: a commit's turn ended before it came")
		default:
			if l.left == nil {
				l.left = map[uint64]struct{}{}
			}
			l.left[at] = struct{}{}
		}
	}
}

// advanceLocked moves the line past the place being served and past every
// place given up right behind it, and wakes the waiters.
func (l *orderLine) advanceLocked() {
	l.served++
	for {
		if _, ok := l.left[l.served]; !ok {
			break
		}
		delete(l.left, l.served)
		l.served++
	}
	if len(l.left) == 0 {
		l.left = nil
	}
	if l.moved != nil {
		close(l.moved)
		l.moved = nil
	}
}

// CarriedOut returns once every commit of the API key that has started
// (taken its place) has carried out its effects or given up, or when ctx
// ends. A read of the key's outbox calls it between reading and sending:
// an entry it read was written by a commit that had started by then, and
// if that commit is this process's, its reply must reach the POS before
// the entry does.
func (e *Engine) CarriedOut(ctx context.Context, merchantID, apiKeyID string) {
	p := e.order.take(merchantID, []string{apiKeyID})
	p.waitOr(ctx.Done())
	p.leave()
}
