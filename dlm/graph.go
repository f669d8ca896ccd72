package dlm

import (
	"slices"
	"strings"
)

// WaitEdge says that request Waiter cannot be granted because of request
// Holder: either Holder holds an incompatible lock (Queued false) or it is
// queued ahead of Waiter in an incompatible mode (Queued true).
type WaitEdge struct {
	Waiter      string `json:"waiter"`
	WaiterOwner Owner  `json:"waiter_owner"`
	Holder      string `json:"holder"`
	HolderOwner Owner  `json:"holder_owner"`
	Resource    string `json:"resource"`
	Queued      bool   `json:"queued,omitempty"`
}

// WaitFor returns the wait-for graph between requests.
func (t *Table) WaitFor() []WaitEdge {
	var out []WaitEdge
	for _, space := range sortedKeys(t.spaces) {
		sp := t.spaces[space]
		q := t.queue(sp)
		for i, p := range q {
			if p.held && Covers(p.granted, p.Mode) {
				continue
			}
			for _, x := range sortedEntryList(sp) {
				if x == p || !x.held || !x.Resource.Overlaps(p.Resource) || Compatible(p.Mode, x.granted) || (p.Recovery && x.orphan) {
					continue
				}
				out = append(out, WaitEdge{Waiter: p.ID, WaiterOwner: p.Owner, Holder: x.ID, HolderOwner: x.Owner, Resource: p.Resource.String()})
			}
			for _, y := range q[:i] {
				if y.Resource.Overlaps(p.Resource) && !Compatible(p.Mode, y.Mode) {
					out = append(out, WaitEdge{Waiter: p.ID, WaiterOwner: p.Owner, Holder: y.ID, HolderOwner: y.Owner, Resource: p.Resource.String(), Queued: true})
				}
			}
		}
	}
	return out
}

// Cycles returns the groups of owners that wait for each other in a
// cycle (strongly connected components of the owner-level wait-for graph
// with more than one owner). An owner waits for another when one of its
// requests waits for one of the other's. A cycle through cached locks
// may still resolve itself once blocking callbacks are served; a cycle
// that persists is a deadlock.
func (t *Table) Cycles() [][]Owner {
	return OwnerCycles(t.WaitFor())
}

// DeadlockVictims returns, for every owner-level wait-for cycle, the
// request that gives way: of the pending requests in the cycle that wait
// for another owner of the cycle and asked for FailOnDeadlock, the one
// queued last (highest queue revision; on a tie, the greater ID). The
// choice follows from the order of events alone, so every node's replica
// names the same victim; the victim's node fails it with ErrDeadlock once
// the cycle has lasted Config.DeadlockGrace, and the others keep waiting
// (the classic DLM picks one victim, never both sides). A cycle without
// such a request has no victim: it lasts until a waiter gives up.
func (t *Table) DeadlockVictims() []string {
	edges := t.WaitFor()
	var out []string
	for _, c := range OwnerCycles(edges) {
		in := map[Owner]bool{}
		for _, o := range c {
			in[o] = true
		}
		var victim *entry
		for _, e := range edges {
			if e.WaiterOwner == e.HolderOwner || !in[e.WaiterOwner] || !in[e.HolderOwner] {
				continue
			}
			p := t.reqs[e.Waiter]
			if p == nil || !p.FailOnDeadlock {
				continue
			}
			if victim == nil || p.queuedAt() > victim.queuedAt() || p.queuedAt() == victim.queuedAt() && p.ID > victim.ID {
				victim = p
			}
		}
		if victim != nil {
			out = append(out, victim.ID)
		}
	}
	return out
}

// OwnerCycles finds the owner-level cycles of a wait-for graph.
func OwnerCycles(edges []WaitEdge) [][]Owner {
	adj := map[Owner][]Owner{}
	var nodes []Owner
	seen := map[Owner]bool{}
	add := func(o Owner) {
		if !seen[o] {
			seen[o] = true
			nodes = append(nodes, o)
		}
	}
	for _, e := range edges {
		add(e.WaiterOwner)
		add(e.HolderOwner)
		if e.WaiterOwner != e.HolderOwner {
			adj[e.WaiterOwner] = append(adj[e.WaiterOwner], e.HolderOwner)
		}
	}
	slices.SortFunc(nodes, cmpOwner)
	// Tarjan's algorithm.
	index := map[Owner]int{}
	low := map[Owner]int{}
	on := map[Owner]bool{}
	var stack []Owner
	var out [][]Owner
	n := 0
	var visit func(v Owner)
	visit = func(v Owner) {
		index[v], low[v] = n, n
		n++
		stack = append(stack, v)
		on[v] = true
		for _, w := range adj[v] {
			if _, ok := index[w]; !ok {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if on[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var comp []Owner
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				on[w] = false
				comp = append(comp, w)
				if w == v {
					break
				}
			}
			if len(comp) > 1 {
				slices.SortFunc(comp, cmpOwner)
				out = append(out, comp)
			}
		}
	}
	for _, v := range nodes {
		if _, ok := index[v]; !ok {
			visit(v)
		}
	}
	slices.SortFunc(out, func(a, b []Owner) int { return cmpOwner(a[0], b[0]) })
	return out
}

func cmpOwner(a, b Owner) int { return strings.Compare(a.String(), b.String()) }
