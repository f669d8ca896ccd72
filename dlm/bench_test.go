package dlm

import (
	"context"
	"testing"

	"github.com/shoal-ha/shoal/internal/etcdtest"
)

// BenchmarkCachedReacquire measures a local re-acquire and release of a
// lock the node keeps cached (no etcd request).
func BenchmarkCachedReacquire(b *testing.B) {
	c := etcdtest.NewCluster(b, 1)
	x := startTestNode(b, c, 0, "bench")
	ctx := context.Background()
	res := Named("cached")
	l, err := x.n.Acquire(ctx, res, EX)
	if err != nil {
		b.Fatal(err)
	}
	l.Release()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		l, err := x.n.Acquire(ctx, res, EX)
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}
