package cluster

import (
	"sync"
	"time"
)

// TimedEvent is a member event with the local time it was seen.
type TimedEvent struct {
	Event
	Seen time.Time `json:"seen"`
}

// eventRing keeps the last few member events for status and the admin API.
type eventRing struct {
	mu   sync.Mutex
	max  int
	list []TimedEvent
}

func newEventRing(max int) *eventRing { return &eventRing{max: max} }

func (r *eventRing) add(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, TimedEvent{Event: ev, Seen: time.Now().UTC()})
	if len(r.list) > r.max {
		r.list = r.list[len(r.list)-r.max:]
	}
}

func (r *eventRing) snapshot() []TimedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]TimedEvent(nil), r.list...)
}
