package recovery

import (
	"fmt"
	"strings"

	"github.com/shoal-ha/shoal/fencing"
)

// Wait is one thing a recovery step waits for once it has run longer than
// Config.StepReportAfter, as the part of the daemon that carries the step
// out describes it (Config.Waits): a region lock and who stands in its
// way, a fence that does not answer, a leg that does not answer.
type Wait struct {
	// What is the kind of thing waited for: "region lock", "fence",
	// "leg I/O", "etcd".
	What string `json:"what"`
	// Resource names the lock resource, leg or key, when there is one.
	Resource string `json:"resource,omitempty"`
	// Holders are the granted locks in the way, as "owner mode" with
	// "orphan" added for a dead owner's lock.
	Holders []string `json:"holders,omitempty"`
	// QueuePosition counts the queued requests that go before this one;
	// 0 is the head of the queue.
	QueuePosition int `json:"queue_position"`
	// Detail says anything else that helps.
	Detail string `json:"detail,omitempty"`
}

// String is the one-line form used in logs and tables.
func (w Wait) String() string {
	var b strings.Builder
	b.WriteString(w.What)
	if w.Resource != "" {
		fmt.Fprintf(&b, " %s", w.Resource)
	}
	if len(w.Holders) > 0 {
		fmt.Fprintf(&b, " held by %s", strings.Join(w.Holders, ", "))
	}
	if w.QueuePosition > 0 {
		fmt.Fprintf(&b, " behind %d queued", w.QueuePosition)
	}
	if w.Detail != "" {
		fmt.Fprintf(&b, " (%s)", w.Detail)
	}
	return b.String()
}

// WaitsFunc describes what victim's recovery waits for in step right now;
// nil or empty when it cannot tell. It must not block.
type WaitsFunc func(victim fencing.NodeRef, step Step) []Wait

func waitStrings(ws []Wait) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.String()
	}
	return out
}
