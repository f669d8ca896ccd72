package cluster

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/shoal-ha/shoal/internal/keys"
)

func mi(name, inc string) keys.MemberRecord {
	return keys.MemberRecord{Name: name, Incarnation: inc, Kind: keys.KindNode}
}

func kinds(evs []Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("%s:%s/%s ", e.Kind, e.Member.Name, e.Member.Incarnation)
	}
	return s
}

func TestViewEvents(t *testing.T) {
	v := NewView()
	if got := kinds(v.Reset([]keys.MemberRecord{mi("a", "1"), mi("b", "1")}, 10)); got != "up:a/1 up:b/1 " {
		t.Fatalf("reset: %q", got)
	}
	if got := kinds(v.Delete("b", 11)); got != "down:b/1 " {
		t.Fatalf("delete: %q", got)
	}
	if got := kinds(v.Put(mi("b", "2"), 12)); got != "up:b/2 " {
		t.Fatalf("rejoin: %q", got)
	}
	// A new incarnation replacing a live one: the old one is down.
	if got := kinds(v.Put(mi("a", "2"), 13)); got != "down:a/1 up:a/2 " {
		t.Fatalf("takeover: %q", got)
	}
	// The leaving marker, then the delete: a departure, not a death.
	leaving := mi("b", "2")
	leaving.Leaving = true
	if got := kinds(v.Put(leaving, 14)); got != "" {
		t.Fatalf("leaving marker: %q", got)
	}
	if got := kinds(v.Delete("b", 15)); got != "left:b/2 " {
		t.Fatalf("clean leave: %q", got)
	}
	// Stale revisions are ignored.
	if got := kinds(v.Put(mi("z", "9"), 15)); got != "" {
		t.Fatalf("stale put applied: %q", got)
	}
	// A relisting after a broken watch reports what changed meanwhile.
	if got := kinds(v.Reset([]keys.MemberRecord{mi("a", "3"), mi("c", "1")}, 20)); got != "down:a/2 up:a/3 up:c/1 " {
		t.Fatalf("relist: %q", got)
	}
}

// TestViewMatchesListing checks the view against the simplest model: after
// any sequence of puts and deletes, the view equals the set of keys.
func TestViewMatchesListing(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		v := NewView()
		model := map[string]keys.MemberRecord{}
		live := map[string]bool{}
		rev := int64(1)
		for step := 0; step < 50; step++ {
			rev++
			name := string(rune('a' + rng.Intn(5)))
			var evs []Event
			if rng.Intn(3) == 0 {
				evs = v.Delete(name, rev)
				delete(model, name)
			} else {
				m := mi(name, fmt.Sprint(rng.Intn(3)))
				evs = v.Put(m, rev)
				model[name] = m
			}
			for _, e := range evs {
				id := e.Member.Name + "/" + e.Member.Incarnation
				switch e.Kind {
				case NodeUp:
					if live[id] {
						t.Fatalf("round %d: up for live %s", round, id)
					}
					live[id] = true
				default:
					if !live[id] {
						t.Fatalf("round %d: down for dead %s", round, id)
					}
					delete(live, id)
				}
			}
		}
		want := map[string]bool{}
		for _, m := range model {
			want[m.Name+"/"+m.Incarnation] = true
		}
		if !reflect.DeepEqual(want, live) && !(len(want) == 0 && len(live) == 0) {
			t.Fatalf("round %d: events say %v, keys say %v", round, live, want)
		}
		if got := len(v.Members()); got != len(model) {
			t.Fatalf("round %d: view has %d members, keys %d", round, got, len(model))
		}
	}
}
