package fencing

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// NodeRef names one incarnation of a node: the thing that is fenced. A node
// that comes back after being fenced is a new incarnation with a new key.
type NodeRef struct {
	// Name is the node's stable name, as the fence agent knows it.
	Name string `json:"name"`
	// Incarnation identifies one run of the node.
	Incarnation string `json:"incarnation"`
	// Key is the incarnation's persistent-reservation key (KeyFor).
	Key uint64 `json:"key"`
	// LeaseID is the etcd lease carrying the incarnation's liveness.
	LeaseID int64 `json:"lease_id"`
}

// NewNodeRef returns the reference for incarnation of node name, with its
// reservation key derived by KeyFor.
func NewNodeRef(name, incarnation string, leaseID int64) NodeRef {
	return NodeRef{Name: name, Incarnation: incarnation, Key: KeyFor(name, incarnation), LeaseID: leaseID}
}

// String is "name/incarnation".
func (n NodeRef) String() string { return n.Name + "/" + n.Incarnation }

// Validate says which field is missing.
func (n NodeRef) Validate() error {
	switch {
	case n.Name == "":
		return fmt.Errorf("fencing: node reference: Name is empty")
	case n.Incarnation == "":
		return fmt.Errorf("fencing: node reference %q: Incarnation is empty", n.Name)
	case n.Key == 0:
		return fmt.Errorf("fencing: node reference %s: Key is zero", n)
	}
	return nil
}

// KeyFor derives the 8-byte reservation key of one incarnation of a node:
// the first 8 bytes of SHA-256 over name and incarnation. Every incarnation
// gets its own key, so a fenced node that comes back cannot write with the
// key that was preempted. Zero is not a valid SPC-4 key and is never
// returned.
func KeyFor(name, incarnation string) uint64 {
	h := sha256.New()
	h.Write([]byte("shoal-pr-key\x00"))
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(incarnation))
	k := binary.BigEndian.Uint64(h.Sum(nil))
	if k == 0 {
		k = 1
	}
	return k
}
