// Package chaos holds `make chaos`: an end-to-end run of the real termhub
// binary on a private redis-server with AOF (appendfsync always), with
// simulated terminals and POS clients making payments while Redis is
// stalled (SIGSTOP), killed and restarted, and the hub itself is killed
// with SIGKILL. When the faults are over it waits for every transaction to
// end and checks, from what the POS clients and the terminals saw and what
// the hub's API says, that no final was lost or doubled, no transaction was
// left unfinished, every approval the terminals reported was delivered or
// voided, and no reference made two payments (docs/ops.md#when-redis-stalls-restarts-or-fails-over, docs/protocol.md#auto-void-reason-codes, docs/protocol.md#messageid-ack-and-replay).
//
// The test, TestChaos, skips unless TERMHUB_CHAOS=1. TERMHUB_CHAOS_ROUNDS
// (default 20) and TERMHUB_CHAOS_MINUTES (default 10) size the run;
// TERMHUB_CHAOS_BIN runs a termhub binary built elsewhere instead of
// building ./cmd/termhub.
package chaos
