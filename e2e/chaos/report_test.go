package chaos

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/termhub/termhub/protocol"
)

// maxListed bounds the transactions described per failed check.
const maxListed = 15

// runFacts is what the report needs besides the checks.
type runFacts struct {
	rounds       map[faultKind]int
	total        time.Duration // the whole test, build included
	faulted      time.Duration // the payments-and-faults phase
	settled      time.Duration // the settle wait
	hubStarts    int
	failedStarts int
	hubExits     []string
	posConnects  map[string]int
	unacked      []string
	// dropsBy counts the client connections that ended, by the fault
	// active then ("no fault" otherwise).
	dropsBy map[string]int
	// redisDrops describes each connection that ended during a Redis fault.
	redisDrops []string
}

// report renders the figures, one per line: first the run's verdict (the
// five checks between "transactions created" and the answer times must be
// 0), then what explains it.
func report(view hubView, s seen, v verdict, f runFacts) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	line := func(name string, format string, args ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	var during, normal []time.Duration
	classes := map[string]int{}
	var slow []request
	slowDuring := 0
	for _, r := range s.requests {
		classes[r.outcome]++
		if r.duringFault {
			during = append(during, r.took)
		} else {
			normal = append(normal, r.took)
		}
		if answeredLate(r) {
			slow = append(slow, r)
			if r.duringFault {
				slowDuring++
			}
		}
	}
	line("requests sent", "%d", len(s.requests))
	line("requests answered 503 unavailable", "%d", classes[outcomeUnavailable])
	line("transactions created", "%d", len(v.all))
	line("lost finals", "%d", len(v.lost))
	line("doubled finals", "%d", len(v.doubled))
	line("stuck", "%d", len(v.stuck))
	line("approvals left unvoided", "%d", len(v.unvoided))
	line("duplicated payments", "%d", len(v.duplicates))
	line("answer time during faults p50/p99/max", "%s (%d requests)", percentiles(during), len(during))
	line("answer time otherwise p50/p99/max", "%s (%d requests)", percentiles(normal), len(normal))
	_ = tw.Flush()
	b.WriteString("\n")
	line("rounds", "%d redis-stall, %d redis-kill, %d hub-kill", f.rounds[redisStall], f.rounds[redisKill], f.rounds[hubKill])
	line("run time", "%s (payments and faults %s, settle %s)", f.total.Round(time.Second), f.faulted.Round(time.Second), f.settled.Round(time.Second))
	line("answers by class", "%s", classList(classes))
	line("answers slower than request_timeout", "%d (%d during faults; request_timeout %s)", len(slow), slowDuring, requestTimeout)
	line("payments asked for", "%d (never answered normally: %d)", len(s.refs), unconverged(s))
	line("approvals not told to the POS", "%d (already counted as lost finals)", len(v.approvedNotTold))
	line("terminal approvals / voidPayments", "%d / %d", approvals(s), voids(s))
	line("final statuses at the hub", "%s", statusList(view))
	line("hub processes", "%d started, %d exited before ready, %d exited by themselves", f.hubStarts, f.failedStarts, len(f.hubExits))
	line("POS connections", "%s", connList(f.posConnects))
	line("client connections dropped", "%s (terminals and POS; a Redis fault should drop none)", connList(f.dropsBy))
	line("terminal results never acknowledged", "%d", len(f.unacked))
	_ = tw.Flush()
	for i, r := range slow {
		if i == maxListed {
			fmt.Fprintf(&b, "slow answer: … and %d more\n", len(slow)-maxListed)
			break
		}
		fmt.Fprintf(&b, "slow answer: %s %s %s → %s in %s (during a fault: %v) %s\n",
			clockTime(r.sentAt), r.via, r.reference, r.outcome, r.took.Round(time.Millisecond), r.duringFault, r.detail)
	}
	for i, d := range f.redisDrops {
		if i == maxListed {
			fmt.Fprintf(&b, "dropped during a Redis fault: … and %d more\n", len(f.redisDrops)-maxListed)
			break
		}
		b.WriteString("dropped during a Redis fault: " + d + "\n")
	}
	for _, e := range f.hubExits {
		b.WriteString("hub exit: " + e + "\n")
	}
	for _, n := range s.notes {
		b.WriteString("note: " + n + "\n")
	}
	return b.String()
}

// answeredLate reports whether r got an answer (a WebSocket reply or an
// HTTP status) later than request_timeout allows, with half a second for
// the way there and back on a loaded machine.
func answeredLate(r request) bool {
	if r.outcome == outcomeTransport || r.outcome == outcomeNoAnswer {
		return false
	}
	return r.took > requestTimeout+500*time.Millisecond
}

// percentiles renders p50/p99/max of ds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("%s / %s / %s", r(at(0.50)), r(at(0.99)), r(ds[len(ds)-1]))
}

func classList(c map[string]int) string {
	order := []string{outcomeCreated, outcomeExisting, outcomeUnavailable, outcomeInternal, outcomeTransport, outcomeNoAnswer, outcomeBusy, outcomeOffline, outcomeOther}
	var parts []string
	for _, k := range order {
		if c[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, c[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func statusList(view hubView) string {
	c := map[protocol.Status]int{}
	for _, t := range view.txns {
		c[t.Status]++
	}
	var keys []string
	for st := range c {
		keys = append(keys, string(st))
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, c[protocol.Status(k)]))
	}
	if len(view.missing) > 0 {
		parts = append(parts, fmt.Sprintf("unknown to the hub %d", len(view.missing)))
	}
	return strings.Join(parts, ", ")
}

func connList(c map[string]int) string {
	var keys []string
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, c[k]))
	}
	return strings.Join(parts, ", ")
}

func unconverged(s seen) int {
	n := 0
	for _, p := range s.refs {
		if !p.converged {
			n++
		}
	}
	return n
}

func approvals(s seen) int {
	n := 0
	for _, tt := range s.term {
		if tt.approved() {
			n++
		}
	}
	return n
}

func voids(s seen) int {
	n := 0
	for _, tt := range s.term {
		n += len(tt.voids)
	}
	return n
}

// offenders describes the transactions each failed check names: the hub's
// state and history, what the POS and the terminal saw, and the requests.
func offenders(view hubView, s seen, v verdict) string {
	var b strings.Builder
	section := func(name string, ids []string) {
		if len(ids) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s: %d\n", name, len(ids))
		for i, id := range ids {
			if i == maxListed {
				fmt.Fprintf(&b, "  … and %d more\n", len(ids)-maxListed)
				break
			}
			b.WriteString(describe(view, s, id))
		}
	}
	section("lost finals", v.lost)
	section("doubled finals", v.doubled)
	section("stuck", v.stuck)
	section("approvals left unvoided", v.unvoided)
	var refs []string
	for ref := range v.duplicates {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for _, ref := range refs {
		fmt.Fprintf(&b, "\nduplicated payment: reference %s made %s\n", ref, strings.Join(v.duplicates[ref], ", "))
		for _, id := range v.duplicates[ref] {
			b.WriteString(describe(view, s, id))
		}
	}
	return b.String()
}

// describe is one transaction from every side.
func describe(view hubView, s seen, id string) string {
	var b strings.Builder
	txn := view.txns[id]
	switch {
	case txn == nil && view.missing[id]:
		fmt.Fprintf(&b, "  %s: unknown to the hub (404)\n", id)
	case txn == nil:
		fmt.Fprintf(&b, "  %s: not seen in the hub's list\n", id)
	default:
		p := s.refs[txn.Reference]
		fmt.Fprintf(&b, "  %s: %s v%d %s on %s, %s %s, ref %s (key %s, via %s)", id, txn.Status, txn.Version, txn.Type, txn.TerminalID, txn.Amount, txn.Currency, txn.Reference, p.key, p.via)
		if txn.ErrorCode != "" {
			fmt.Fprintf(&b, ", errorCode %s", txn.ErrorCode)
		}
		b.WriteString("\n    hub history:")
		for _, h := range txn.History {
			fmt.Fprintf(&b, " %s %s", clockTime(h.At), h.Status)
			if h.Cause != "" {
				fmt.Fprintf(&b, " (%s)", h.Cause)
			}
			b.WriteString(";")
		}
		b.WriteString("\n")
		for _, r := range s.requests {
			if r.reference == txn.Reference {
				fmt.Fprintf(&b, "    request %s %s → %s in %s %s\n", r.via, clockTime(r.sentAt), r.outcome, r.took.Round(time.Millisecond), r.detail)
			}
		}
	}
	for _, m := range s.pos[id] {
		fmt.Fprintf(&b, "    POS %s %s got %s %s v%d %s %s\n", m.key, clockTime(m.at), m.action, m.status, m.version, m.reasonCode, m.messageID)
	}
	if tt, ok := s.term[id]; ok {
		for _, e := range tt.events {
			fmt.Fprintf(&b, "    terminal %s %s\n", clockTime(e.Time), e)
		}
	} else {
		b.WriteString("    terminal: never heard of it\n")
	}
	return b.String()
}
