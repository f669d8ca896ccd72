package lease

import (
	"errors"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	const s = time.Second
	for _, c := range []struct {
		t  Timing
		ok bool
	}{
		// The daemon's profiles.
		{Timing{TTL: 10 * s, KeepAlive: s, KeepAliveTimeout: s, Election: s, Margin: s}, true},
		{Timing{TTL: 2 * s, KeepAlive: 250 * time.Millisecond, KeepAliveTimeout: 500 * time.Millisecond, Election: 500 * time.Millisecond, Margin: 250 * time.Millisecond}, true},
		// lockctl's old lease: TTL 5 s, renewals every TTL/4 bounded by
		// TTL/2, margin 1 s, in a cluster with 1 s elections.
		{Timing{TTL: 5 * s, KeepAlive: 1250 * time.Millisecond, KeepAliveTimeout: 2500 * time.Millisecond, Election: s, Margin: s}, false},
		// Below etcd's minimum TTL.
		{Timing{TTL: 4 * s, KeepAlive: 10 * time.Millisecond, KeepAliveTimeout: 10 * time.Millisecond, Election: 3 * s, Margin: 0}, false},
		{Timing{TTL: 1500 * time.Millisecond, KeepAlive: s, KeepAliveTimeout: s, Election: s}, false},
		{Timing{TTL: 10 * s, Election: s}, false},
	} {
		err := c.t.Check()
		if (err == nil) != c.ok {
			t.Errorf("%+v: Check = %v, want ok=%v", c.t, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrTiming) {
			t.Errorf("%+v: %v is not ErrTiming", c.t, err)
		}
	}
}

func TestClientTimingFollowsTheRule(t *testing.T) {
	for _, e := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 10 * time.Second} {
		for _, m := range []time.Duration{0, 250 * time.Millisecond, time.Second} {
			ct := ClientTiming(e, m)
			if err := ct.Check(); err != nil {
				t.Errorf("ClientTiming(%v, %v) = %+v: %v", e, m, ct, err)
			}
			// The shortest such TTL: one second less breaks the rule.
			if shorter := ct; shorter.TTL > time.Second {
				shorter.TTL -= time.Second
				if shorter.Check() == nil {
					t.Errorf("ClientTiming(%v, %v) TTL %v is not the shortest", e, m, ct.TTL)
				}
			}
		}
	}
}
