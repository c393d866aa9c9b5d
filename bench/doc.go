// Package bench is termhub's load generator: `termhub bench` and `make
// bench-hub`. It drives real WebSocket clients (package client) against a
// hub, and against a bare durable relay built in here (the floor: no rules,
// one pipelined Redis write per inbound message), so that every hub figure
// can be read beside what the same message sequence costs with no hub logic
// at all on the same machine and the same Redis.
//
// Scenarios: latency (sequential payments, one POS and one terminal),
// floor (the same through the relay), throughput (closed loop, many
// terminals), load (open loop at a fixed offered rate), idle (hub memory per
// idle connection), replay (unacknowledged messages after a reconnect) and
// storm (every terminal dropped and reconnecting at once); with several
// hub processes on one Redis (Options.Nodes), nodes (POS and terminal on
// the same node and on two, in turns) and failover (kill -9 of the node
// holding every terminal, which reconnect to the others). Each prints
// p50/p99/max and rates; Report renders them as one table.
//
// The package never asserts on timing: targets are compared and reported
// as met or missed, nothing more.
package bench
