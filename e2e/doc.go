// Package e2e holds termhub's end-to-end tests: a whole App (hub, engine,
// outbox) on miniredis or the Redis of REDIS_URL, behind a real listener,
// driven by the client package over real WebSockets and signed HTTP, with a
// fake clock so that timeouts and grace periods take no time.
package e2e
