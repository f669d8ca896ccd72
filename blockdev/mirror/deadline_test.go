package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
)

// handOffLeg is a leg whose data writes meet at a hand-off: the first leg
// (written from its own goroutine) ends the caller's context and lets the
// last leg go on, which, like a file leg, refuses to start a write whose
// context has ended.
type handOffLeg struct {
	blockdev.Device
	dataOff int64
	first   bool
	end     context.CancelFunc
	ended   chan struct{}
}

func (l *handOffLeg) WriteAt(ctx context.Context, p []byte, off int64) error {
	if off >= l.dataOff {
		if l.first {
			l.end()
			close(l.ended)
		} else {
			<-l.ended
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return l.Device.WriteAt(ctx, p, off)
}

// TestDeadlinePassingMidWriteReachesEveryLeg: the caller's deadline passes
// while its write is going out to the legs (a loaded machine). The legs
// are slow, not failed: the write reaches every leg and is acknowledged,
// and the legs agree. With and without cached checksum areas.
func TestDeadlinePassingMidWriteReachesEveryLeg(t *testing.T) {
	for _, cache := range []int64{0, FastConfig(0).ChecksumCache} {
		t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) {
			r := newRig(t, 2, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ended := make(chan struct{})
			var legs []*handOffLeg
			n, err := r.tryOpen(0, func(c *Config) {
				c.ChecksumCache = cache
				for i, d := range c.Legs {
					l := &handOffLeg{Device: d, dataOff: 1 << 62, first: i == 0, end: cancel, ended: ended}
					legs = append(legs, l)
					c.Legs[i] = l
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range legs {
				l.dataOff = n.vol.geo.DataOffset
			}
			p := bytes.Repeat([]byte{0xC3}, 2*testBS)
			const off = 3 * testBS
			if err := n.vol.WriteAt(ctx, p, off); err != nil {
				t.Fatalf("a write whose deadline passed while it went out to the legs: %v", err)
			}
			got := make([]byte, len(p))
			for i, leg := range r.legs {
				if err := leg.ReadAt(context.Background(), got, n.vol.geo.DataOffset+off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, p) {
					t.Fatalf("leg %d misses the write: the legs disagree", i)
				}
			}
			if err := n.vol.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDeadlinePassedBeforeTheDataWritesNothing: a write whose deadline has
// passed by the time its data would go out fails with the context's error
// and leaves every leg and the region's state as they were.
func TestDeadlinePassedBeforeTheDataWritesNothing(t *testing.T) {
	r := newRig(t, 2, 1)
	n := r.open(0)
	old := bytes.Repeat([]byte{0x11}, testBS)
	if err := n.vol.WriteAt(context.Background(), old, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.vol.WriteAt(ctx, bytes.Repeat([]byte{0x22}, testBS), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("a write whose context had ended: %v, want context.Canceled", err)
	}
	got := make([]byte, testBS)
	for i, leg := range r.legs {
		if err := leg.ReadAt(context.Background(), got, n.vol.geo.DataOffset); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, old) {
			t.Fatalf("leg %d changed by a write whose context had ended", i)
		}
	}
	n.vol.stateMu.Lock()
	degraded := n.vol.in.degraded.Count()
	n.vol.stateMu.Unlock()
	if degraded != 0 {
		t.Fatalf("%d regions degraded by a write that wrote nothing", degraded)
	}
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
}
