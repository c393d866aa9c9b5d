package main

import (
	"bytes"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionBinary builds termhub as a release would (VCS stamping on, a
// build time given with -ldflags) and checks that `termhub version` prints
// what the toolchain recorded in the binary, as `go version -m` reads it:
// the module version, and the revision, its time and the modified flag
// when the checkout stamped them. (A linked git worktree is not stamped by
// the go command; a plain clone is, and then the revision is checked too.)
func TestVersionBinary(t *testing.T) {
	bin := t.TempDir() + "/termhub"
	build := exec.Command("go", "build", "-buildvcs=auto", "-ldflags", "-X main.buildTime=2026-01-02T03:04:05Z", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("termhub version: %v", err)
	}
	meta, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	recorded := map[string]string{}
	for _, line := range strings.Split(string(meta), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod":
			recorded["mod"] = f[2]
		case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs"):
			k, v, _ := strings.Cut(f[1], "=")
			recorded[k] = v
		}
	}
	got := string(out)
	for _, want := range []string{
		"module:   github.com/termhub/termhub " + recorded["mod"] + "\n",
		"built:    2026-01-02T03:04:05Z\n",
		"go:       go1.",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("termhub version lacks %q:\n%s\ngo version -m:\n%s", want, got, meta)
		}
	}
	if rev := recorded["vcs.revision"]; rev != "" {
		if !strings.Contains(got, "revision: git "+rev) || !strings.Contains(got, "commit:   "+recorded["vcs.time"]) ||
			strings.Contains(got, "(modified") != (recorded["vcs.modified"] == "true") {
			t.Errorf("termhub version does not match the stamped revision:\n%s\ngo version -m:\n%s", got, meta)
		}
	} else {
		t.Logf("this checkout is not VCS-stamped (a linked worktree, or no git): checking the unstamped output only")
		if !strings.Contains(got, "revision: unknown") {
			t.Errorf("termhub version:\n%s", got)
		}
	}
	if strings.HasPrefix(got, "termhub dev\n") != (recorded["mod"] == "(devel)") {
		t.Errorf("first line of\n%s\ndoes not match the module version %q", got, recorded["mod"])
	}
}

// TestPrintBuildInfo checks the lines of a stamped build, which
// TestVersionBinary only sees in a plain clone.
func TestPrintBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.99.1",
		Main:      debug.Module{Path: "github.com/termhub/termhub", Version: "v1.2.3-0.20260102030405-0123456789ab+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
		},
	}
	var b bytes.Buffer
	printBuildInfo(&b, bi)
	want := `termhub v1.2.3-0.20260102030405-0123456789ab+dirty
  module:   github.com/termhub/termhub v1.2.3-0.20260102030405-0123456789ab+dirty
  revision: git 0123456789abcdef (modified: the work tree had uncommitted changes)
  commit:   2026-01-02T03:04:05Z
  go:       go1.99.1
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	printBuildInfo(&b, nil)
	if got := b.String(); !strings.HasPrefix(got, "termhub dev\n") || !strings.Contains(got, "revision: unknown") {
		t.Errorf("no build info:\n%s", got)
	}
}
