package web

import (
	"context"

	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// FromStore gives the shared store as the web tier's Store.
func FromStore(s *store.Store) Store { return storeAdapter{s} }

type storeAdapter struct{ *store.Store }

// Update runs fn in a store transaction (*store.Tx is a session.Tx). The
// store may run fn more than once; the engine keeps no effects outside tx.
func (a storeAdapter) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	return a.Store.Update(ctx, func(tx *store.Tx) error { return fn(tx) })
}

// RecoveryHandler is the store's handler for session.RecordIntent records
// (store.Config.Handlers, store.Store.Handle): it applies a dead node's
// intent that has no result yet, once, in the recovering node's
// transaction, and stores its response. cfg gives the layout and limits; it
// must equal the serving nodes' configuration.
func RecoveryHandler(cfg Config) store.Handler {
	eng := session.NewEngine(cfg.Layout)
	eng.MaxSessionBytes = cfg.MaxSessionBytes
	now := cfg.clockNow()
	return func(ctx context.Context, tx *store.Tx, rec store.Record) error {
		_, _, err := eng.Recover(tx, rec.Payload, now())
		return err
	}
}
