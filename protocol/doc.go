// Package protocol defines termhub's wire contract: one Go type per message,
// action names, error codes, decoding with validation, exact money amounts
// with ISO 4217 exponents, and HMAC request signing shared by the hub and its
// clients.
//
// It knows nothing of sockets, Redis or clocks: every function here is pure,
// so the same code signs a request in the client and verifies it in the hub.
package protocol
