// Package session is the deterministic core of Shoal's sessions API: the
// session operations (create, set, add, append, delete) and the exactly-once
// rules for requests carrying an Idempotency-Key (IETF httpapi draft "The
// Idempotency-Key HTTP Header Field", draft-ietf-httpapi-idempotency-key-header-07).
//
// The core holds no goroutines, sockets or clocks. An Engine is fed events
// (a request begins, is applied, is abandoned, a dead node's journal record is
// recovered, keys are collected) inside a store transaction Tx, and returns a
// Decision or a Response. Everything it keeps lives in the transaction's
// files, so the same Engine on every node sees the same state; the HTTP shell
// in package web only maps requests to events and decisions to answers.
//
// The path of one mutating request, each step one store transaction:
//
//	Begin:   key record "in progress", owned by this node incarnation, and an
//	         intent record (key, fingerprint, operation) logged in this node's
//	         journal, committed together before anything is applied.
//	Apply:   under the session's lock, the operation applied to the session
//	         file and its response stored in the key record, committed
//	         together; only then is the client answered.
//	Recover: a survivor replaying a dead node's journal hands every intent
//	         record to Recover: an intent whose key record is still "in
//	         progress" under the dead incarnation is applied there, once.
//
// Because an operation's effect and its key record's "done" commit in one
// transaction, a key record "in progress" always means "not applied". Only
// its owner may apply it while the owner is live; after the owner died, only
// recovery of the owner's journal may, so nothing is applied twice.
//
// Usage:
//
//	eng := session.NewEngine(session.DefaultLayout())
//	d, err := eng.Begin(tx, req, self, liveness, now) // one transaction
//	if d.Kind == session.Proceed {
//		resp, err := eng.Apply(tx2, d.Intent, now) // the next one
//	}
package session
