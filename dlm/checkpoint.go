package dlm

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Grants are decided by the order of events, so the lock table cannot be
// rebuilt from the keys in etcd alone. A checkpoint is an exact copy of a
// replica at a revision: a node that joins loads the newest checkpoint and
// replays only the events after it, so etcd may compact older history.

// checkpointState is the serialized form of a Replica.
type checkpointState struct {
	Rev     int64              `json:"rev"`
	TokRev  int64              `json:"tok_rev"`
	TokN    uint32             `json:"tok_n"`
	Entries []checkpointEntry  `json:"entries"`
	Dead    []Owner            `json:"dead,omitempty"`
	LVBs    map[string]lvbJSON `json:"lvbs,omitempty"`
	LastTok map[string]Token   `json:"last_tok,omitempty"`
	Members map[string]Owner   `json:"members,omitempty"`
}

type checkpointEntry struct {
	ID        string   `json:"id"`
	Owner     Owner    `json:"owner"`
	Resource  Resource `json:"res"`
	Mode      Mode     `json:"mode"`
	Recovery  bool     `json:"recovery,omitempty"`
	NoQueue   bool     `json:"noqueue,omitempty"`
	FailOnDL  bool     `json:"fail_on_deadlock,omitempty"`
	Held      bool     `json:"held,omitempty"`
	Granted   Mode     `json:"granted"`
	CreateRev int64    `json:"create_rev"`
	ConvRev   int64    `json:"conv_rev"`
	Token     Token    `json:"token,omitempty"`
	GrantRev  int64    `json:"grant_rev,omitempty"`
	Orphan    bool     `json:"orphan,omitempty"`
	BlockSent bool     `json:"block_sent,omitempty"`
	BlockMode Mode     `json:"block_mode"`
}

type lvbJSON struct {
	Value []byte `json:"value,omitempty"`
	Valid bool   `json:"valid"`
	Rev   int64  `json:"rev"`
}

// Checkpoint serializes the replica (gzip-compressed JSON) as the state
// after every event up to revision rev (at least the table's revision); a
// replica restored from it follows events after rev.
func (r *Replica) Checkpoint(rev int64) ([]byte, error) {
	t := r.Table
	if rev < t.rev {
		return nil, fmt.Errorf("dlm: checkpoint at revision %d behind the table's %d", rev, t.rev)
	}
	st := checkpointState{Rev: rev, TokRev: t.tokRev, TokN: t.tokN, LVBs: map[string]lvbJSON{}, LastTok: t.lastTok, Members: r.members}
	for _, e := range t.sortedEntries(func(*entry) bool { return true }) {
		st.Entries = append(st.Entries, checkpointEntry{ID: e.ID, Owner: e.Owner, Resource: e.Resource, Mode: e.Mode, Recovery: e.Recovery,
			NoQueue: e.NoQueue, FailOnDL: e.FailOnDeadlock, Held: e.held, Granted: e.granted, CreateRev: e.createRev, ConvRev: e.convRev, Token: e.token,
			GrantRev: e.grantRev, Orphan: e.orphan, BlockSent: e.blockSent, BlockMode: e.blockMode})
	}
	for o := range t.dead {
		st.Dead = append(st.Dead, o)
	}
	slices.SortFunc(st.Dead, cmpOwner)
	for k, l := range t.lvbs {
		st.LVBs[k] = lvbJSON{Value: l.value, Valid: l.valid, Rev: l.rev}
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(st); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// RestoreReplica rebuilds a replica for prefix from a checkpoint and
// checks the result.
func RestoreReplica(prefix string, data []byte) (*Replica, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("dlm: checkpoint: %w", err)
	}
	var st checkpointState
	if err := json.NewDecoder(io.LimitReader(zr, 256<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("dlm: checkpoint: %w", err)
	}
	r := NewReplica(prefix)
	t := r.Table
	t.rev, t.tokRev, t.tokN = st.Rev, st.TokRev, st.TokN
	for _, c := range st.Entries {
		if err := c.Resource.Validate(); err != nil || !c.Mode.Valid() || !c.Granted.Valid() || !c.BlockMode.Valid() ||
			!strings.HasPrefix(c.ID, r.keys.reqs()) {
			return nil, fmt.Errorf("dlm: checkpoint: bad entry %q", c.ID)
		}
		if _, dup := t.reqs[c.ID]; dup {
			return nil, fmt.Errorf("dlm: checkpoint: entry %q twice", c.ID)
		}
		e := &entry{Request: Request{ID: c.ID, Owner: c.Owner, Resource: c.Resource, Mode: c.Mode, Recovery: c.Recovery, NoQueue: c.NoQueue, FailOnDeadlock: c.FailOnDL},
			held: c.Held, granted: c.Granted, createRev: c.CreateRev, convRev: c.ConvRev, token: c.Token, grantRev: c.GrantRev,
			orphan: c.Orphan, blockSent: c.BlockSent, blockMode: c.BlockMode}
		t.reqs[e.ID] = e
		sp := t.spaces[e.Resource.space()]
		if sp == nil {
			sp = map[string]*entry{}
			t.spaces[e.Resource.space()] = sp
		}
		sp[e.ID] = e
	}
	for _, o := range st.Dead {
		t.dead[o] = true
	}
	for k, l := range st.LVBs {
		t.lvbs[k] = &lvbState{value: l.Value, valid: l.Valid, rev: l.Rev}
	}
	for k, v := range st.LastTok {
		t.lastTok[k] = v
	}
	for k, o := range st.Members {
		r.members[k] = o
	}
	if err := t.Check(); err != nil {
		return nil, fmt.Errorf("dlm: checkpoint at revision %d fails the table check: %w", st.Rev, err)
	}
	return r, nil
}
