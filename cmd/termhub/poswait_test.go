package main

import (
	"strings"
	"testing"
)

// TestPOSSignatureAnswersBinary answers a signature prompt (amount ending
// in 55) both ways through the built binary and checks the words printed:
// "signature accepted" and "signature declined" (once "declineed").
func TestPOSSignatureAnswersBinary(t *testing.T) {
	bin := buildTermhub(t)
	h := newCLIHub(t)
	for answer, want := range map[string][]string{
		"accept":  {"signature accepted\n", "paymentComplete  COMPLETED"},
		"decline": {"signature declined\n", "paymentComplete  DECLINED"},
	} {
		out, errOut, code := runTermhub(t, bin, h.url, "pos", "pay", "--terminal", "T1", "--amount", "1.55", "--wait", "--signature", answer)
		if code != 0 || strings.Contains(out, "declineed") {
			t.Fatalf("--signature %s: exit %d\n%s%s", answer, code, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("--signature %s: output lacks %q:\n%s", answer, w, out)
			}
		}
	}
}
