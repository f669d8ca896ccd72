package node

import (
	"net/url"
	"testing"

	"github.com/shoal-ha/shoal/dlm"
)

// GET /api/locks lists what an operator looks for first (waiters,
// conversions, orphans) before the plain holders, cuts the list at the
// limit and still counts every match per owner.
func TestSelectLocksPutsNotableFirstAndCounts(t *testing.T) {
	a := dlm.Owner{Node: "a", Incarnation: "1"}
	b := dlm.Owner{Node: "b", Incarnation: "2"}
	locks := []dlm.LockInfo{
		{ID: "1", Resource: dlm.Named("a-held"), Owner: a, Held: true, Granted: dlm.EX, Want: dlm.EX},
		{ID: "2", Resource: dlm.Named("b-held"), Owner: a, Held: true, Granted: dlm.PR, Want: dlm.PR},
		{ID: "3", Resource: dlm.Named("z-wait"), Owner: b, Want: dlm.EX},
		{ID: "4", Resource: dlm.Named("y-orphan"), Owner: b, Held: true, Granted: dlm.EX, Want: dlm.EX, Orphan: true},
		{ID: "5", Resource: dlm.Region("vol", 0, 10), Owner: b, Held: true, Granted: dlm.PR, Want: dlm.PR},
	}
	out, matched, owners, kinds := selectLocks(locks, LockQuery{Limit: 3})
	if matched != 5 || len(out) != 3 {
		t.Fatalf("matched %d, listed %d; want 5 and 3", matched, len(out))
	}
	if out[0].ID != "4" || out[1].ID != "3" || out[2].ID != "1" {
		t.Fatalf("order %s %s %s, want the orphan and the waiter first, then holders by resource", out[0].ID, out[1].ID, out[2].ID)
	}
	if len(owners) != 2 || owners[0] != (OwnerCount{Owner: a, Held: 2}) || owners[1] != (OwnerCount{Owner: b, Held: 1, Waiting: 1, Orphan: 1}) {
		t.Fatalf("owner counts %+v", owners)
	}
	if len(kinds) != 5 || kinds[0].Count != 1 {
		t.Fatalf("kind counts %+v", kinds)
	}
	store := []dlm.LockInfo{{Resource: dlm.Named("store-1/i/12")}, {Resource: dlm.Named("store-1/i/13")}, {Resource: dlm.Region("vol", 0, 10)}, {Resource: dlm.Named("42")}}
	if k := countKinds(store); len(k) != 3 || k[0] != (KindCount{Kind: "store-1/i/", Count: 2}) || k[1] != (KindCount{Kind: "42", Count: 1}) || k[2] != (KindCount{Kind: "vol@ regions", Count: 1}) {
		t.Fatalf("kinds of store and region locks: %+v", k)
	}
	q, err := ParseLockQuery(url.Values{"volume": {"vol"}, "range": {"5-6"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, matched, _, _ := selectLocks(locks, q); matched != 1 || out[0].ID != "5" {
		t.Fatalf("volume and range select %+v", out)
	}
	if back, err := ParseLockQuery(q.Values()); err != nil || back != q {
		t.Fatalf("query round trip: %+v %v, want %+v", back, err, q)
	}
	for _, bad := range []url.Values{{"range": {"1-2"}}, {"volume": {"v"}, "range": {"9-3"}}, {"limit": {"-1"}}} {
		if _, err := ParseLockQuery(bad); err == nil {
			t.Errorf("query %v accepted", bad)
		}
	}
}
