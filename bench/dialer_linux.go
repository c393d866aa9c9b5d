package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// spreadSources: on Linux every address of 127.0.0.0/8 is the loopback's.
const spreadSources = true

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound to
// a source address, so that the port is chosen by connect (for the whole
// four-tuple) rather than by bind (for the address alone).
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
