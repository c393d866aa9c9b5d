// Command termhub is the termhub gateway and its tools: `serve` runs the hub,
// `sim` runs simulated terminals, `pos` is a command-line POS, `bench` is the
// load generator and `version` prints the build.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `termhub — a gateway between POS apps and card terminals

usage:
  termhub serve --config FILE   run the hub
  termhub sim --terminal ID:SECRET [--config FILE] [--card-delay 300ms]
                                run simulated card terminals (termhub sim -h)
  termhub pos COMMAND [flags]   a command-line POS: pay, status, refund, cancel,
                                void, capture, signature, list, terminals, watch,
                                http (any signed request, or --curl to print it)
  termhub bench [flags]         load-test a hub against a bare relay (termhub bench -h)
  termhub version               print the version, the VCS revision it was built
                                from (and whether modified) and the Go version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "sim":
		err = runSimCommand(os.Args[2:])
	case "pos":
		err = runPOSCommand(os.Args[2:])
	case "bench":
		err = runBenchCommand(os.Args[2:])
	case "version", "--version", "-v":
		printVersion(os.Stdout)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "termhub: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "termhub:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is the exit status for a command's error: the one it asks for
// (an interrupted --wait exits 130, see interruptedError), otherwise 1.
func exitCode(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}
