package dlm

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestCheckpointRestoresExactly restores a replica from a checkpoint at a
// random point of a random event stream and checks that the copy makes
// the same decisions as the original from then on.
func TestCheckpointRestoresExactly(t *testing.T) {
	for seed := range 100 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		orig := NewReplica("/p")
		var copy *Replica
		owners := []Owner{{"n1", "1"}, {"n2", "1"}, {"n3", "1"}}
		resources := []Resource{Named("a"), Region("v", 0, 8), Region("v", 4, 12)}
		var ids []string
		cut := 5 + rng.IntN(40)
		for step := 0; step < 60; step++ {
			rev := int64(step + 2)
			type op func(tb *Table) ([]Decision, error)
			var do op
			switch k := rng.IntN(10); {
			case k < 5 || len(ids) == 0:
				o := owners[rng.IntN(len(owners))]
				id := fmt.Sprintf("/p/dlm/req/%s/%s/%04d", o.Node, o.Incarnation, step)
				req := Request{ID: id, Owner: o, Resource: resources[rng.IntN(len(resources))], Mode: Mode(rng.IntN(numModes)), NoQueue: rng.IntN(5) == 0, Recovery: rng.IntN(9) == 0}
				ids = append(ids, id)
				do = func(tb *Table) ([]Decision, error) { return tb.Request(rev, req) }
			case k < 7:
				id := ids[rng.IntN(len(ids))]
				m := Mode(rng.IntN(numModes))
				do = func(tb *Table) ([]Decision, error) {
					l, ok := tb.Lock(id)
					if !ok {
						return nil, nil
					}
					return tb.Request(rev, Request{ID: id, Owner: l.Owner, Resource: l.Resource, Mode: m, Recovery: l.Recovery})
				}
			case k < 9:
				id := ids[rng.IntN(len(ids))]
				do = func(tb *Table) ([]Decision, error) { return tb.Release(rev, id) }
			default:
				o := owners[rng.IntN(len(owners))]
				do = func(tb *Table) ([]Decision, error) {
					if tb.Dead(o) {
						return nil, nil
					}
					if rng := rev % 3; rng == 0 {
						return nil, tb.SetLVB(rev, Named("a"), []byte(fmt.Sprint(rev)), true)
					}
					return tb.MemberDown(rev, o)
				}
			}
			d1, err1 := do(orig.Table)
			if copy != nil {
				d2, err2 := do(copy.Table)
				if fmt.Sprint(d1, err1) != fmt.Sprint(d2, err2) {
					t.Fatalf("seed %d step %d: original decided %v %v, restored copy %v %v", seed, step, d1, err1, d2, err2)
				}
				if a, b := formatLocks(orig.Table.Locks()), formatLocks(copy.Table.Locks()); a != b {
					t.Fatalf("seed %d step %d: tables differ:\n%s\nvs\n%s", seed, step, a, b)
				}
			}
			if step == cut {
				data, err := orig.Checkpoint(orig.Table.Revision())
				if err != nil {
					t.Fatal(err)
				}
				copy, err = RestoreReplica("/p", data)
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
		}
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("not gzip"), {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := RestoreReplica("/p", data); err == nil {
			t.Errorf("RestoreReplica(%q) succeeded", data)
		}
	}
	// A checkpoint whose table breaks the invariants is refused.
	r := NewReplica("/p")
	if _, err := r.Table.Request(2, Request{ID: "/p/dlm/req/n1/1/1", Owner: Owner{"n1", "1"}, Resource: Named("a"), Mode: EX}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Table.Request(3, Request{ID: "/p/dlm/req/n2/1/1", Owner: Owner{"n2", "1"}, Resource: Named("a"), Mode: EX}); err != nil {
		t.Fatal(err)
	}
	e := r.Table.reqs["/p/dlm/req/n2/1/1"]
	e.held, e.granted = true, EX // two EX holders
	data, err := r.Checkpoint(r.Table.Revision())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreReplica("/p", data); err == nil || !strings.Contains(err.Error(), "granted together") {
		t.Fatalf("inconsistent checkpoint accepted: %v", err)
	}
}
