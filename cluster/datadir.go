package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrForeignDataDir: the data directory belongs to another cluster or node.
// Not retriable: point the node at its own directory.
var ErrForeignDataDir = errors.New("data directory belongs to another cluster or node")

// ErrDataDirInUse: another live shoald holds the data directory.
var ErrDataDirInUse = errors.New("data directory in use by another shoald")

const identityFile = "shoal-node.json"

// identity is what a data directory remembers about its owner.
type identity struct {
	Cluster string    `json:"cluster"`
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
}

// dataDir is a node's data directory, locked for the life of the process.
type dataDir struct {
	path    string
	lock    *os.File
	created []string // paths this run created, removed again by undo
}

// checkDataDir reads the identity of dir without changing anything and
// refuses a directory of another cluster or node.
func checkDataDir(dir, cluster, node string) error {
	raw, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		// A directory with an etcd member but no identity was not made by
		// shoald: refuse rather than adopt someone else's member.
		if _, err := os.Stat(filepath.Join(dir, "etcd", "member")); err == nil {
			return fmt.Errorf("%w: %s holds an etcd member but no %s", ErrForeignDataDir, dir, identityFile)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	var id identity
	if err := json.Unmarshal(raw, &id); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrForeignDataDir, filepath.Join(dir, identityFile), err)
	}
	if id.Cluster != cluster {
		return fmt.Errorf("%w: %s belongs to cluster %q (node %q), not to cluster %q", ErrForeignDataDir, dir, id.Cluster, id.Node, cluster)
	}
	if id.Node != node {
		return fmt.Errorf("%w: %s belongs to node %q of cluster %q, not to node %q", ErrForeignDataDir, dir, id.Node, id.Cluster, node)
	}
	return nil
}

// openDataDir checks, creates if needed, and locks dir. undo removes what
// this call created, for a start that fails.
func openDataDir(dir, cluster, node string) (*dataDir, error) {
	if err := checkDataDir(dir, cluster, node); err != nil {
		return nil, err
	}
	d := &dataDir{path: dir}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		d.created = append(d.created, dir)
	}
	lockPath := filepath.Join(dir, ".lock")
	if _, err := os.Stat(lockPath); errors.Is(err, os.ErrNotExist) {
		d.created = append(d.created, lockPath)
	}
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		d.undo()
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(lockPath)
		f.Close()
		d.undo()
		return nil, fmt.Errorf("%w: %s (pid %s)", ErrDataDirInUse, dir, strings.TrimSpace(string(holder)))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	d.lock = f
	idPath := filepath.Join(dir, identityFile)
	if _, err := os.Stat(idPath); errors.Is(err, os.ErrNotExist) {
		raw, _ := json.MarshalIndent(identity{Cluster: cluster, Node: node, Created: time.Now().UTC()}, "", "  ")
		if err := os.WriteFile(idPath, append(raw, '\n'), 0o600); err != nil {
			d.close()
			return nil, fmt.Errorf("data dir: %w", err)
		}
		d.created = append(d.created, idPath)
	}
	return d, nil
}

// track records a path that this start created.
func (d *dataDir) track(path string) { d.created = append(d.created, path) }

// undo removes, newest first, what this start created, and unlocks.
func (d *dataDir) undo() {
	for i := len(d.created) - 1; i >= 0; i-- {
		os.RemoveAll(d.created[i])
	}
	d.created = nil
	d.close()
}

// commit forgets what was created: the start succeeded.
func (d *dataDir) commit() { d.created = nil }

func (d *dataDir) close() {
	if d.lock != nil {
		unix.Flock(int(d.lock.Fd()), unix.LOCK_UN)
		d.lock.Close()
		d.lock = nil
	}
}
