//go:build !linux

package redisproc

import "syscall"

// sysProcAttr is empty where the kernel cannot tie the server's life to
// the test binary's.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// waitState returns at once where the process state cannot be read;
// the signal has been sent and is delivered shortly.
func waitState(*process, bool) error { return nil }
