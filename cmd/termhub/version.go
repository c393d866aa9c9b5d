package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// version and buildTime may be set at build time with
// -ldflags "-X main.version=v1.2.3 -X main.buildTime=2026-01-02T15:04:05Z".
// Without them, `termhub version` reports what the Go toolchain recorded
// in the binary (debug.ReadBuildInfo), which is enough to tell which commit
// a binary was built from: `go build` in a git checkout stamps the
// revision, its time and whether the work tree had changes.
var (
	version   = ""
	buildTime = ""
)

// printVersion writes the build's version, module version, VCS revision
// (with "modified" when the work tree had uncommitted changes), commit time,
// build time when stamped, and Go version.
func printVersion(w io.Writer) {
	printBuildInfo(w, readBuildInfo())
}

// readBuildInfo is debug.ReadBuildInfo, or nil when the binary has none.
func readBuildInfo() *debug.BuildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return bi
}

// printBuildInfo is printVersion for a given build info (nil: none), so
// that the formatting can be tested without building a binary.
func printBuildInfo(w io.Writer, bi *debug.BuildInfo) {
	mod, modVersion := "github.com/termhub/termhub", ""
	settings := map[string]string{}
	goVersion := ""
	if bi != nil {
		if bi.Main.Path != "" {
			mod = bi.Main.Path
		}
		modVersion = bi.Main.Version
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
	}
	v := version
	if v == "" {
		v = modVersion
	}
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	fmt.Fprintf(w, "termhub %s\n", v)
	if modVersion == "" {
		modVersion = "unknown"
	}
	fmt.Fprintf(w, "  module:   %s %s\n", mod, modVersion)
	if rev := settings["vcs.revision"]; rev != "" {
		vcs := settings["vcs"]
		if vcs == "" {
			vcs = "vcs"
		}
		line := fmt.Sprintf("  revision: %s %s", vcs, rev)
		if settings["vcs.modified"] == "true" {
			line += " (modified: the work tree had uncommitted changes)"
		}
		fmt.Fprintln(w, line)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(w, "  commit:   %s\n", t)
		}
	} else {
		fmt.Fprintln(w, "  revision: unknown (not built with `go build` in a git checkout)")
	}
	if buildTime != "" {
		fmt.Fprintf(w, "  built:    %s\n", buildTime)
	}
	if goVersion != "" {
		fmt.Fprintf(w, "  go:       %s\n", strings.TrimSpace(goVersion))
	}
}
