package dlm

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// refCompat is the classic compatibility matrix, written out as in the
// VMS and Linux DLM documentation (rows: held, columns: requested).
var refCompat = map[string]string{
	//     NL CR CW PR PW EX
	"NL": "1  1  1  1  1  1",
	"CR": "1  1  1  1  1  0",
	"CW": "1  1  1  0  0  0",
	"PR": "1  1  0  1  0  0",
	"PW": "1  1  0  0  0  0",
	"EX": "1  0  0  0  0  0",
}

func refCompatible(a, b Mode) bool {
	row := refCompat[a.String()]
	return row[int(b)*3] == '1'
}

func TestCompatibilityMatrix(t *testing.T) {
	for a := NL; a <= EX; a++ {
		for b := NL; b <= EX; b++ {
			if Compatible(a, b) != refCompatible(a, b) {
				t.Errorf("Compatible(%s, %s) = %v, reference says %v", a, b, Compatible(a, b), refCompatible(a, b))
			}
			// Covers(a, b): everything that conflicts with b conflicts with a.
			want := true
			for m := NL; m <= EX; m++ {
				if !refCompatible(m, b) && refCompatible(m, a) {
					want = false
				}
			}
			if Covers(a, b) != want {
				t.Errorf("Covers(%s, %s) = %v, want %v", a, b, Covers(a, b), want)
			}
			s := Sup(a, b)
			if !Covers(s, a) || !Covers(s, b) {
				t.Errorf("Sup(%s, %s) = %s does not cover both", a, b, s)
			}
			for m := NL; m <= EX; m++ {
				if Covers(m, a) && Covers(m, b) && !Covers(m, s) {
					t.Errorf("Sup(%s, %s) = %s is not the weakest: %s also covers both", a, b, s, m)
				}
			}
		}
	}
	if Compatible(Mode(9), NL) {
		t.Error("invalid mode compatible")
	}
	if _, err := ParseMode("XX"); err == nil {
		t.Error("ParseMode accepted XX")
	}
}

func TestRangeOverlapReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		a0 := rng.Uint64N(16)
		a1 := a0 + 1 + rng.Uint64N(8)
		b0 := rng.Uint64N(16)
		b1 := b0 + 1 + rng.Uint64N(8)
		va, vb := "v", "v"
		if rng.IntN(5) == 0 {
			vb = "w"
		}
		want := false
		for x := a0; x < a1 && va == vb; x++ {
			if x >= b0 && x < b1 {
				want = true
			}
		}
		ra, rb := Region(va, a0, a1), Region(vb, b0, b1)
		if ra.Overlaps(rb) != want || rb.Overlaps(ra) != want {
			t.Fatalf("%s overlaps %s = %v, want %v", ra, rb, ra.Overlaps(rb), want)
		}
	}
	if Named("a").Overlaps(Region("a", 0, 10)) {
		t.Error("named resource overlaps a region of a volume with the same name")
	}
	for _, bad := range []string{"", "vol@", "vol@5", "vol@5-5", "vol@9-3", "vol@x-4", "a b", "vol@1-2-3"} {
		if _, err := ParseResource(bad); err == nil {
			t.Errorf("ParseResource(%q) accepted", bad)
		}
	}
}

// refReq is the reference model's view of a request.
type refReq struct {
	id      string
	owner   Owner
	res     Resource
	want    Mode
	held    bool
	granted Mode
	arrival int // order in which the request, or its conversion, was made
	conv    bool
	recov   bool
	orphan  bool
}

// TestTableAgainstReference drives the table with random events and
// checks each state against an independent, brute-force reading of the
// rules: holders compatible, no waiter grantable, grants stable, FIFO
// among conflicting requests, tokens increasing, nobody starves.
func TestTableAgainstReference(t *testing.T) {
	iters := 300
	if testing.Short() {
		iters = 50
	}
	for seed := range iters {
		runReferenceSeed(t, uint64(seed))
		if t.Failed() {
			return
		}
	}
}

func runReferenceSeed(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	tb := NewTable()
	ref := map[string]*refReq{}
	owners := []Owner{{"n1", "1"}, {"n2", "1"}, {"n3", "1"}}
	dead := map[Owner]bool{}
	resources := []Resource{Named("a"), Named("b"), Region("v", 0, 8), Region("v", 4, 12), Region("v", 10, 16)}
	rev := int64(1)
	arrival := 0
	lastTok := map[string]Token{} // per resource text: grants on one resource must grow
	grantSeq := []string{}
	nextID := 0
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d rev %d: %s\n%s", seed, rev, fmt.Sprintf(format, args...), formatLocks(tb.Locks()))
	}
	apply := func(ds []Decision, err error) {
		t.Helper()
		if err != nil {
			fail("%v", err)
		}
		for _, d := range ds {
			r := ref[d.ID]
			switch d.Kind {
			case Granted:
				if r == nil {
					fail("grant of unknown %s", d.ID)
				}
				// FIFO: nothing conflicting is still queued ahead of it.
				for _, o := range ref {
					if o == r || !o.res.Overlaps(r.res) || (o.held && !o.conv) || refCompatible(o.want, d.Mode) {
						continue
					}
					ahead := refRank(o) < refRank(r) || refRank(o) == refRank(r) && o.arrival < r.arrival
					if r.recov && !o.recov {
						ahead = false // recovery goes past the plain queue
					}
					if ahead && !(r.conv && Covers(r.granted, r.want)) {
						fail("%s granted %s while %s (%s) queued ahead of it", d.ID, d.Mode, o.id, o.want)
					}
				}
				r.held, r.granted, r.conv = true, d.Mode, false
				if d.Mode != r.want {
					fail("%s granted %s, wanted %s", d.ID, d.Mode, r.want)
				}
				for _, o := range ref {
					// Every earlier grant overlapping this one has a smaller token.
					if o != r && o.held && o.res.Overlaps(r.res) && !refCompatible(o.granted, r.granted) {
						if tok, _ := tb.Lock(o.id); tok.Token >= d.Token {
							fail("token %s of %s not above %s of conflicting %s", d.Token, d.ID, tok.Token, o.id)
						}
					}
				}
				if d.Token <= lastTok[d.Resource.String()] {
					fail("token %s of %s not above %s", d.Token, d.ID, lastTok[d.Resource.String()])
				}
				lastTok[d.Resource.String()] = d.Token
				grantSeq = append(grantSeq, d.ID)
			case Refused:
				if r.held {
					r.want, r.conv = r.granted, false
				} else {
					delete(ref, d.ID)
				}
			case Dropped:
				delete(ref, d.ID)
			case Orphaned:
				r.orphan = true
				r.want, r.conv = r.granted, false
			}
		}
	}
	before := map[string]Mode{}
	for step := 0; step < 60; step++ {
		rev++
		clear(before)
		for id, r := range ref {
			if r.held {
				before[id] = r.granted
			}
		}
		touched := ""
		switch k := rng.IntN(10); {
		case k < 4: // new request
			o := owners[rng.IntN(len(owners))]
			if dead[o] {
				continue
			}
			nextID++
			id := fmt.Sprintf("r%02d", nextID)
			req := Request{ID: id, Owner: o, Resource: resources[rng.IntN(len(resources))], Mode: Mode(rng.IntN(numModes)), NoQueue: rng.IntN(6) == 0}
			if rng.IntN(8) == 0 {
				req.Recovery = true
			}
			arrival++
			ref[id] = &refReq{id: id, owner: o, res: req.Resource, want: req.Mode, arrival: arrival, recov: req.Recovery}
			touched = id
			apply(tb.Request(rev, req))
		case k < 6: // conversion of a held lock
			var ids []string
			for _, id := range sortedKeys(ref) {
				if r := ref[id]; r.held && !r.orphan && !r.conv {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				continue
			}
			r := ref[ids[rng.IntN(len(ids))]]
			r.want = Mode(rng.IntN(numModes))
			arrival++
			r.arrival, r.conv = arrival, r.want != r.granted
			touched = r.id
			apply(tb.Request(rev, Request{ID: r.id, Owner: r.owner, Resource: r.res, Mode: r.want, Recovery: r.recov}))
			if r.want == r.granted {
				r.conv = false
			}
		case k < 9: // release
			ids := sortedKeys(ref)
			if len(ids) == 0 {
				continue
			}
			id := ids[rng.IntN(len(ids))]
			delete(ref, id)
			touched = id
			apply(tb.Release(rev, id))
		default: // an owner dies
			o := owners[rng.IntN(len(owners))]
			if dead[o] || rng.IntN(3) != 0 {
				continue
			}
			dead[o] = true
			apply(tb.MemberDown(rev, o))
		}
		checkReference(t, fail, tb, ref)
		// Grants are stable: nobody loses a lock it did not give up.
		for id, m := range before {
			r := ref[id]
			if id == touched || r == nil {
				continue
			}
			if !r.held || r.granted != m && r.granted != r.want {
				fail("%s lost its %s grant", id, m)
			}
		}
	}
	// Liveness: releasing every granted lock (orphans included) drains
	// the table; every waiter is granted on the way.
	for range 200 {
		ids := sortedKeys(ref)
		if len(ids) == 0 {
			break
		}
		progressed := false
		for _, id := range ids {
			if r := ref[id]; r.held {
				rev++
				delete(ref, id)
				apply(tb.Release(rev, id))
				checkReference(t, fail, tb, ref)
				progressed = true
				break
			}
		}
		if !progressed {
			fail("nothing granted but %d requests wait", len(ids))
		}
	}
	if len(tb.Locks()) != 0 {
		fail("table not empty after draining")
	}
}

// checkReference compares the table with the reference model and checks
// the safety rules by brute force.
func checkReference(t *testing.T, fail func(string, ...any), tb *Table, ref map[string]*refReq) {
	t.Helper()
	if err := tb.Check(); err != nil {
		fail("Check: %v", err)
	}
	locks := tb.Locks()
	if len(locks) != len(ref) {
		fail("table has %d requests, reference %d", len(locks), len(ref))
	}
	for _, l := range locks {
		r := ref[l.ID]
		if r == nil {
			fail("table holds %s unknown to the reference", l.ID)
		}
		if l.Held != r.held || (l.Held && l.Granted != r.granted) || l.Want != r.want || l.Orphan != r.orphan {
			fail("%s: table held=%v %s want %s orphan=%v; reference held=%v %s want %s orphan=%v",
				l.ID, l.Held, l.Granted, l.Want, l.Orphan, r.held, r.granted, r.want, r.orphan)
		}
	}
	// Safety: holders of overlapping resources are compatible.
	ids := sortedKeys(ref)
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			x, y := ref[a], ref[b]
			if x.held && y.held && x.res.Overlaps(y.res) && !refCompatible(x.granted, y.granted) &&
				!(x.recov && y.orphan) && !(y.recov && x.orphan) {
				fail("%s %s and %s %s held together", a, x.granted, b, y.granted)
			}
		}
	}
	// Settled, FIFO: a waiter is blocked by a conflicting holder or by a
	// conflicting request queued ahead of it (conversions first, then
	// recovery requests, then new requests, each in arrival order); a
	// recovery request only by recovery requests ahead of it.
	rank := refRank
	for _, id := range ids {
		p := ref[id]
		if p.held && !p.conv {
			continue
		}
		if p.conv && Covers(p.granted, p.want) {
			fail("%s: down-conversion waits", id)
		}
		blocked := false
		for _, oid := range ids {
			o := ref[oid]
			if o == p || !o.res.Overlaps(p.res) {
				continue
			}
			if o.held && !refCompatible(o.granted, p.want) && !(p.recov && o.orphan) {
				blocked = true
			}
			waiting := !o.held || o.conv
			ahead := rank(o) < rank(p) || rank(o) == rank(p) && o.arrival < p.arrival
			if p.recov && !o.recov {
				ahead = false // recovery goes past the plain queue
			}
			if waiting && ahead && !refCompatible(o.want, p.want) {
				blocked = true
			}
		}
		if !blocked {
			fail("%s waits for %s but nothing blocks it", id, p.want)
		}
	}
}

func refRank(r *refReq) int {
	switch {
	case r.conv:
		return 0
	case r.recov && !r.held:
		return 1
	}
	return 2
}
