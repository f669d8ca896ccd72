// Package web is Shoal's web tier: every node serves the store's content
// tree over HTTP (ContentHandler: strong ETags, conditional and range
// requests, index.html) and the sessions API (API), whose mutating requests
// carry an Idempotency-Key and are applied exactly once even when the node
// serving them dies mid-request (the rules live in package session; the
// store's recovery hands a dead node's journaled intents to
// API.RecoverRecord).
//
// Usage, in a node:
//
//	cfg := web.DefaultConfig()
//	cfg.Addr = "127.0.0.2:8080"
//	srv, err := web.NewServer(cfg, st, membership) // st: the store, as web.Store
//	addr, err := srv.Start()
//	...
//	srv.Close() // within cfg.ShutdownTimeout
package web
