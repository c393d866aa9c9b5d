package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/termhub/termhub/client"
	"github.com/termhub/termhub/protocol"
)

// Everything printed comes from the hub, and much of it from terminals and
// POS apps: every string goes through safe (or safeJSON) so that no escape
// sequence, control character or bidi override reaches the operator's
// terminal as such.

// safe returns s as it is if it is printable text, and otherwise quoted Go
// style ("\x1b[2J…"), so that an escape sequence, a control character
// (C0, DEL, C1), a Unicode format character (bidi overrides, zero-width
// characters), a line or paragraph separator, or bytes that are not UTF-8
// are shown rather than acted on by the terminal.
func safe(s string) string {
	if printable(s) {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

// printable reports whether s is valid UTF-8 made only of graphic
// characters (letters, marks, numbers, punctuation, symbols and spaces).
func printable(s string) bool {
	for i, r := range s {
		switch {
		case r >= 0x20 && r < 0x7f:
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false // a byte that is not UTF-8
			}
		case !unicode.IsGraphic(r):
			return false
		}
	}
	return true
}

// safeLines is safe for each line of a text of several lines, such as an
// error message made by errors.Join.
func safeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = safe(l)
	}
	return strings.Join(lines, "\n")
}

// shownError is an error whose message is safe to print (safeLines);
// errors.Is and errors.As see the error it wraps.
type shownError struct{ err error }

func (e shownError) Error() string { return safeLines(e.err.Error()) }
func (e shownError) Unwrap() error { return e.err }

// escapeError wraps err, if any, in a shownError: what a command returns is
// printed by main.
func escapeError(err error) error {
	if err == nil {
		return nil
	}
	return shownError{err}
}

// safeJSON returns a JSON text from the hub for printing on one line: valid
// JSON is compacted and every character that is not graphic (inside
// strings: DEL, C1, format characters, separators) is written as a \u
// escape, bytes that are not UTF-8 as \ufffd, so the result is the same
// JSON value. Anything else is treated as text (safe).
func safeJSON(b []byte) string {
	var buf bytes.Buffer
	if !json.Valid(b) || json.Compact(&buf, b) != nil {
		return safe(strings.TrimSpace(string(b)))
	}
	out := buf.Bytes()
	if printable(string(out)) {
		return string(out)
	}
	var sb strings.Builder
	for i := 0; i < len(out); {
		r, size := utf8.DecodeRune(out[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			sb.WriteString(`\ufffd`)
		case !unicode.IsGraphic(r):
			if r > 0xffff {
				hi, lo := utf16.EncodeRune(r)
				fmt.Fprintf(&sb, `\u%04x\u%04x`, hi, lo)
			} else {
				fmt.Fprintf(&sb, `\u%04x`, r)
			}
		default:
			sb.Write(out[i : i+size])
		}
		i += size
	}
	return sb.String()
}

// dash is safe(s), or "-" for an empty s.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return safe(s)
}

// describeTxn renders a transaction in a few lines: status, amount and id
// first, then card and error details when there are any.
func describeTxn(t *protocol.Transaction) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %s %s  %s on %s", safe(string(t.Status)), safe(t.ID), safe(t.Amount), safe(t.Currency), safe(t.Type), safe(t.TerminalID))
	if t.Reference != "" {
		fmt.Fprintf(&b, "  ref %s", safe(t.Reference))
	}
	if t.ParentID != "" {
		fmt.Fprintf(&b, "  refund of %s", safe(t.ParentID))
	}
	fmt.Fprintf(&b, "  v%d\n", t.Version)
	if t.AuthCode != "" || t.MaskedPAN != "" || t.ResponseCode != "" {
		var parts []string
		if t.CardScheme != "" || t.MaskedPAN != "" {
			parts = append(parts, strings.TrimSpace(safe(t.CardScheme)+" "+safe(t.MaskedPAN)+" "+safe(t.EntryMode)))
		}
		if t.AuthCode != "" {
			parts = append(parts, "auth "+safe(t.AuthCode))
		}
		if t.RRN != "" {
			parts = append(parts, "rrn "+safe(t.RRN))
		}
		if t.ResponseCode != "" {
			parts = append(parts, "response "+safe(t.ResponseCode))
		}
		fmt.Fprintf(&b, "  card: %s\n", strings.Join(parts, "  "))
	}
	if t.ErrorCode != "" || t.ErrorMessage != "" {
		fmt.Fprintf(&b, "  error: %s", dash(t.ErrorCode))
		if t.ErrorMessage != "" {
			fmt.Fprintf(&b, " (%s)", safe(t.ErrorMessage))
		}
		b.WriteString("\n")
	}
	if t.RefundedAmountMinor > 0 {
		fmt.Fprintf(&b, "  refunded: %s %s\n", protocol.FormatAmount(t.RefundedAmountMinor, t.Currency), safe(t.Currency))
	}
	return b.String()
}

// describeEvent is one line for a durable message about a transaction.
func describeEvent(ev protocol.POSEvent) string {
	t := ev.Transaction
	s := fmt.Sprintf("%s  %s  %s  %s %s on %s  v%d", safe(ev.Action), safe(string(t.Status)), safe(t.ID), safe(t.Amount), safe(t.Currency), safe(t.TerminalID), ev.Version)
	if t.ErrorCode != "" {
		s += "  error " + safe(t.ErrorCode)
	}
	if ev.ReasonCode != "" {
		s += fmt.Sprintf("  reason %s: %s", safe(ev.ReasonCode), safe(ev.Reason))
	}
	if ev.MessageID != "" {
		s += "  (message " + safe(ev.MessageID) + ")"
	}
	return s
}

// describeMessage is one line for any POS WebSocket message.
func describeMessage(m client.Message) string {
	switch m.Action {
	case protocol.ActionConnected:
		var g protocol.POSConnected
		if m.Decode(&g) == nil {
			var ts []string
			for _, t := range g.Terminals {
				ts = append(ts, safe(t.TerminalID)+" "+safe(t.Status))
			}
			list := "-"
			if len(ts) > 0 {
				list = strings.Join(ts, ", ")
			}
			return fmt.Sprintf("connected %s merchant %s; terminals: %s", safe(g.ConnectionID), safe(g.MerchantID), list)
		}
	case protocol.ActionTerminalStatusUpdate:
		var u protocol.TerminalStatusUpdate
		if m.Decode(&u) == nil {
			return fmt.Sprintf("terminal %s %s (was %s) %s", safe(u.TerminalID), safe(u.Status), dash(u.PreviousStatus), safe(u.ConnectionID))
		}
	case protocol.ActionForceDisconnect:
		var fd protocol.ForceDisconnect
		if m.Decode(&fd) == nil {
			return fmt.Sprintf("forceDisconnect %s: %s (reconnect allowed: %v)", safe(fd.Reason), safe(fd.Message), fd.ReconnectAllowed)
		}
	case protocol.ActionError:
		return "error " + safe(m.Err().Error())
	}
	if m.MessageID() != "" {
		var ev protocol.POSEvent
		if m.Decode(&ev) == nil && ev.Transaction != nil {
			return describeEvent(ev)
		}
	}
	return safeJSON(m.Raw)
}
