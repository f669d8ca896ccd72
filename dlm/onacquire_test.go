package dlm

import (
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
)

// TestOnAcquireSeesEveryGrant: a first grant is reported with the time it
// waited, a cached re-acquire with zero, a failed try not at all.
func TestOnAcquireSeesEveryGrant(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	var mu sync.Mutex
	var seen []time.Duration
	var modes []Mode
	a := startTestNodeWith(t, c, 0, "a", func(cfg *Config) {
		cfg.OnAcquire = func(m Mode, waited time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			seen, modes = append(seen, waited), append(modes, m)
		}
	})
	ctx := ctxT(t, 20*time.Second)
	l, err := a.n.Acquire(ctx, Named("w"), EX)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	l, err = a.n.Acquire(ctx, Named("w"), PR) // cached: no etcd round trip
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || modes[0] != EX || modes[1] != PR {
		t.Fatalf("seen %v %v", seen, modes)
	}
	if seen[0] <= 0 || seen[1] != 0 {
		t.Fatalf("waits %v: want a positive first wait and a zero cached one", seen)
	}
}
