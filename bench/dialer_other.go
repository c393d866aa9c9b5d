//go:build !linux

package bench

import "syscall"

// spreadSources: elsewhere (macOS, say) only 127.0.0.1 may be configured.
const spreadSources = false

// bindNoPort does nothing where IP_BIND_ADDRESS_NO_PORT does not exist.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
