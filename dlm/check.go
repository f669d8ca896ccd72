package dlm

import (
	"errors"
	"fmt"
)

// Check verifies the invariants of the lock table and returns every
// violation found (nil if none):
//   - granted locks on overlapping resources are compatible (a recovery
//     request may overlap an orphan);
//   - no queued request could be granted now (the table is settled), and
//     no granted lock still owes a blocking callback to a waiter;
//   - orphans belong to dead owners and dead owners have nothing else;
//   - the indexes agree and tokens only grew.
func (t *Table) Check() error {
	var errs []error
	if t.err != nil {
		errs = append(errs, t.err)
	}
	n := 0
	for space, sp := range t.spaces {
		if len(sp) == 0 {
			errs = append(errs, fmt.Errorf("empty space %s kept", space))
		}
		for id, e := range sp {
			n++
			if t.reqs[id] != e {
				errs = append(errs, fmt.Errorf("%s: in space %s but not in the request index", id, space))
			}
			if e.Resource.space() != space {
				errs = append(errs, fmt.Errorf("%s: resource %s filed under space %s", id, e.Resource, space))
			}
			if e.orphan != t.dead[e.Owner] {
				errs = append(errs, fmt.Errorf("%s: orphan=%v but owner %s dead=%v", id, e.orphan, e.Owner, t.dead[e.Owner]))
			}
			if e.orphan && e.pending() {
				errs = append(errs, fmt.Errorf("%s: orphan still waiting", id))
			}
			if e.held && e.token > t.lastTok[space] {
				errs = append(errs, fmt.Errorf("%s: token %s above the space's last %s", id, e.token, t.lastTok[space]))
			}
		}
		list := sortedEntryList(sp)
		for i, a := range list {
			for _, b := range list[i+1:] {
				if !a.held || !b.held || !a.Resource.Overlaps(b.Resource) || Compatible(a.granted, b.granted) {
					continue
				}
				if (a.Recovery && b.orphan) || (b.Recovery && a.orphan) {
					continue
				}
				errs = append(errs, fmt.Errorf("%s (%s %s) and %s (%s %s) granted together", a.ID, a.Resource, a.granted, b.ID, b.Resource, b.granted))
			}
		}
		q := t.queue(sp)
		for i, p := range q {
			if grantable(p, sp, q[:i]) {
				errs = append(errs, fmt.Errorf("%s: waits for %s but could be granted", p.ID, p.Mode))
			}
			for _, x := range list {
				if x != p && x.held && !x.orphan && x.Resource.Overlaps(p.Resource) && !Compatible(p.Mode, x.granted) &&
					!(x.blockSent && Covers(x.blockMode, p.Mode)) {
					errs = append(errs, fmt.Errorf("%s blocks %s but got no blocking callback for %s", x.ID, p.ID, p.Mode))
				}
			}
		}
	}
	if n != len(t.reqs) {
		errs = append(errs, fmt.Errorf("request index holds %d entries, spaces hold %d", len(t.reqs), n))
	}
	return errors.Join(errs...)
}
