package web

import (
	"context"
	"fmt"
	"time"

	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// FromStore gives the shared store as the web tier's Store.
func FromStore(s *store.Store) Store { return storeAdapter{s} }

type storeAdapter struct{ *store.Store }

// Update runs fn in a store transaction. The store may run fn more than
// once; the engine keeps no effects outside tx.
func (a storeAdapter) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	return a.Store.Update(ctx, func(tx *store.Tx) error { return fn(updateTx{tx}) })
}

// UpdateRecoveryBound is Update whose waits for a lock a dead node holds
// last at most wait (store.UpdateRecoveryBound): then store.ErrRecovering,
// nothing committed (RecoveryBounder).
func (a storeAdapter) UpdateRecoveryBound(ctx context.Context, wait time.Duration, fn func(tx session.Tx) error) error {
	return a.Store.UpdateRecoveryBound(ctx, wait, func(tx *store.Tx) error { return fn(updateTx{tx}) })
}

// updateTx is a store transaction whose reads are for update: the engine
// reads a session or key file in a transaction to rewrite it, so each read
// takes the locks its write needs (store.Tx.ReadFileForUpdate: the file
// EX, its directory PR) rather than a PR lock the write would convert up,
// one start over of the transaction per lock. A read for a create or a
// remove (session.CreateReader) takes the directory EX as well.
type updateTx struct{ *store.Tx }

func (t updateTx) ReadFile(name string) ([]byte, error) { return t.Tx.ReadFileForUpdate(name) }

func (t updateTx) ReadFileForCreate(name string) ([]byte, error) {
	return t.Tx.ReadFileForCreate(name)
}

// FileID, ReadFileID and WriteFileID name files by their store identity
// (session.IdentityTx; store.Tx.ReadFileOf, WriteFileOf).
func (t updateTx) FileID(name string) (session.FileID, error) {
	fi, err := t.Tx.Stat(name)
	if err != nil {
		return session.FileID{}, err
	}
	st, ok := fi.Sys().(store.FileStat)
	if !ok {
		return session.FileID{}, fmt.Errorf("web: %s: the store gave no file identity", name)
	}
	return session.FileID{Ino: st.Ino, Gen: uint64(st.Gen)}, nil
}

func (t updateTx) ReadFileID(id session.FileID) ([]byte, error) {
	return t.Tx.ReadFileOf(storeID(id))
}

func (t updateTx) WriteFileID(id session.FileID, data []byte) error {
	return t.Tx.WriteFileOf(storeID(id), data)
}

func storeID(id session.FileID) store.FileStat {
	return store.FileStat{Ino: id.Ino, Gen: uint32(id.Gen)}
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
