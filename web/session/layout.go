package session

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"path"
)

// Layout says where sessions and idempotency-key records live in the store.
// Both directories must lie outside the tree served as content.
//
// Each directory is split into Shards subdirectories, named by one
// lower-case hex digit, made before the tier serves (Dirs): a session file
// lies in the subdirectory of its id's first digit, a key record in that of
// its name's first digit. Creating a file takes its directory's lock
// exclusively in the store; with one directory for all of them, every node
// creating a key (every mutating request does) took that one lock from the
// others. Rewriting a file takes its directory's lock shared only, so the
// shards matter for creates alone.
//
// Stores written before the shards hold their files directly in the two
// directories (the flat layout). They are read where they are and
// rewritten there; new files always go into a shard, so a flat file is
// never made again and flat key records leave with the collector. A
// cluster must not run nodes of both layouts at once: a node of the flat
// layout never looks into the shards.
type Layout struct {
	// Sessions holds the session files, named by their id.
	Sessions string
	// Keys holds one file per idempotency key, named by the SHA-256 of the
	// key in hex (keys are client strings; the hash keeps names tame).
	Keys string
}

// Shards is the number of subdirectories of each of the layout's
// directories. Few, because the store gives each directory a leaf block
// per hash bucket it uses: a directory of many files costs about 1 MiB.
const Shards = 16

// DefaultLayout puts sessions in web/sessions and keys in web/keys.
func DefaultLayout() Layout { return Layout{Sessions: "web/sessions", Keys: "web/keys"} }

// shardOf is the subdirectory of a file named name (hex): its first digit.
func shardOf(name string) string { return name[:1] }

// SessionFile is the file of session id (a ValidID) in the sharded layout.
func (l Layout) SessionFile(id string) string { return path.Join(l.Sessions, shardOf(id), id) }

// flatSessionFile is where the flat layout keeps session id.
func (l Layout) flatSessionFile(id string) string { return path.Join(l.Sessions, id) }

// keyName is the file name of idempotency key key.
func keyName(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// KeyFile is the file of idempotency key key in the sharded layout.
func (l Layout) KeyFile(key string) string {
	n := keyName(key)
	return path.Join(l.Keys, shardOf(n), n)
}

// flatKeyFile is where the flat layout keeps key's record.
func (l Layout) flatKeyFile(key string) string { return path.Join(l.Keys, keyName(key)) }

// Dirs are the directories the layout needs, parents first: both
// directories and their shards. The web tier makes them when it starts.
func (l Layout) Dirs() []string {
	dirs := []string{l.Sessions, l.Keys}
	for _, top := range []string{l.Sessions, l.Keys} {
		for i := range Shards {
			dirs = append(dirs, path.Join(top, shardName(i)))
		}
	}
	return dirs
}

func shardName(i int) string { return string("0123456789abcdef"[i]) }

// isShard reports whether a directory entry of Sessions or Keys is one of
// the shards (rather than a file of the flat layout).
func isShard(e fs.DirEntry) bool {
	if !e.IsDir() || len(e.Name()) != 1 {
		return false
	}
	c := e.Name()[0]
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
}

// files lists the files of dir, a layout directory: those of its shards
// (as "shard/name") and those lying in it directly (flat layout), relative
// to dir. A missing dir has none.
func files(fsys fs.FS, dir string) ([]string, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !isShard(e) {
			if !e.IsDir() {
				names = append(names, e.Name())
			}
			continue
		}
		sub, err := fs.ReadDir(fsys, path.Join(dir, e.Name()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		for _, f := range sub {
			if !f.IsDir() {
				names = append(names, path.Join(e.Name(), f.Name()))
			}
		}
	}
	return names, nil
}

// KeyNames lists the stored idempotency-key records of both layouts as
// names relative to Keys, for Collect.
func (l Layout) KeyNames(fsys fs.FS) ([]string, error) { return files(fsys, l.Keys) }

// HasFlat reports whether fsys holds files of the flat layout (directly in
// Sessions or Keys, outside the shards).
func (l Layout) HasFlat(fsys fs.FS) (bool, error) {
	for _, dir := range []string{l.Sessions, l.Keys} {
		ents, err := fs.ReadDir(fsys, dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		for _, e := range ents {
			if !e.IsDir() {
				return true, nil
			}
		}
	}
	return false, nil
}

// reader is the read side of a Tx, or of a plain io/fs view.
type reader interface {
	ReadFile(name string) ([]byte, error)
}

// CreateReader is an optional ability of a Tx: ReadFileForCreate reads
// name as ReadFile does, for a transaction that goes on to create name
// when it is missing. The store then takes the lock the create needs (the
// directory's, exclusively) at once, instead of taking it anew when the
// create comes (which starts the transaction over).
type CreateReader interface {
	ReadFileForCreate(name string) ([]byte, error)
}

// readForCreate reads name through tx for a create (CreateReader) when
// tx can, else plainly.
func readForCreate(tx reader, name string) ([]byte, error) {
	if c, ok := tx.(CreateReader); ok {
		return c.ReadFileForCreate(name)
	}
	return tx.ReadFile(name)
}

// find reads the file a record lives in: flat, the flat layout's place
// (looked at first, unless "": a store written before the shards), else
// sharded, read for a create when create is set. It returns the file
// found (or sharded, where a new record goes) and its contents, nil when
// missing.
func find(tx reader, flat, sharded string, create bool) (string, []byte, error) {
	if flat != "" {
		b, err := tx.ReadFile(flat)
		if err == nil {
			return flat, b, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", nil, err
		}
	}
	var b []byte
	var err error
	if create {
		b, err = readForCreate(tx, sharded)
	} else {
		b, err = tx.ReadFile(sharded)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return sharded, nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	return sharded, b, nil
}

// FileID is a file's identity in the store: its inode number and
// generation (FileIdentity), which a file keeps across rewrites and
// loses when removed.
type FileID struct {
	Ino, Gen uint64
}

// IdentityTx is an optional ability of a Tx: naming a file by its
// identity rather than by its path. A file rewritten by identity takes no
// lock of its directories in the store: the engine rewrites a key record
// it made in Begin so, without the lock of the key's shard, which other
// nodes making keys there take from each other.
type IdentityTx interface {
	// FileID is the identity of file name, as of the transaction.
	FileID(name string) (FileID, error)
	// ReadFileID reads the file of identity id for a rewrite; an error
	// wrapping fs.ErrNotExist once it was removed.
	ReadFileID(id FileID) ([]byte, error)
	// WriteFileID replaces the contents of the file of identity id.
	WriteFileID(id FileID, data []byte) error
}
