package blockdev

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
)

// Faults decides, per operation, whether a device fails or stalls. The zero
// value injects nothing. All methods are safe for concurrent use; tests
// change faults while I/O runs.
type Faults struct {
	mu        sync.Mutex
	readErr   []span
	writeErr  []span
	offline   bool
	failAfter int64 // ops left before every op fails; <0 means never
	armed     bool
	latency   time.Duration
	clk       clock.Clock
	ops       int64
}

type span struct{ off, end int64 }

// FailReads makes reads overlapping [off, off+n) fail with ErrIO.
func (f *Faults) FailReads(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readErr = append(f.readErr, span{off, off + n})
}

// FailWrites makes writes overlapping [off, off+n) fail with ErrIO.
func (f *Faults) FailWrites(off, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writeErr = append(f.writeErr, span{off, off + n})
}

// SetOffline makes every operation fail with ErrIO (true) or work again.
func (f *Faults) SetOffline(off bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offline = off
}

// FailAfter lets n more operations through, then fails every operation
// with ErrIO as if the path to the device died. n < 0 disarms.
func (f *Faults) FailAfter(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = n >= 0
	f.failAfter = n
}

// SetLatency delays every operation by d on clk (nil: the wall clock).
func (f *Faults) SetLatency(d time.Duration, clk clock.Clock) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency, f.clk = d, clk
}

// Clear removes every injected fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readErr, f.writeErr, f.offline, f.armed, f.latency = nil, nil, false, false, 0
}

// Ops counts the operations seen so far.
func (f *Faults) Ops() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ops
}

type opKind int

const (
	opRead opKind = iota
	opWrite
	opFlush
)

// before is called at the start of every operation.
func (f *Faults) before(ctx context.Context, kind opKind, off, n int64) error {
	f.mu.Lock()
	f.ops++
	lat, clk := f.latency, f.clk
	var err error
	switch {
	case f.offline:
		err = fmt.Errorf("%w: device offline", ErrIO)
	case f.armed && f.failAfter <= 0:
		err = fmt.Errorf("%w: device path failed", ErrIO)
	}
	if f.armed && f.failAfter > 0 {
		f.failAfter--
	}
	if err == nil {
		spans := f.readErr
		if kind == opWrite {
			spans = f.writeErr
		}
		if kind != opFlush {
			for _, s := range spans {
				if off < s.end && s.off < off+n {
					err = fmt.Errorf("%w: injected error at %d", ErrIO, off)
					break
				}
			}
		}
	}
	f.mu.Unlock()
	if lat > 0 {
		if clk == nil {
			clk = clock.Real()
		}
		select {
		case <-clk.After(lat):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

// Faulty wraps a device with injectable faults. Several Faulty wrappers
// over one device model several hosts reaching the same shared disk: one
// host's path can die while the others keep working.
type Faulty struct {
	Device
	Faults
}

// NewFaulty wraps d.
func NewFaulty(d Device) *Faulty { return &Faulty{Device: d} }

// ReadAt reads unless a fault says otherwise.
func (d *Faulty) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.before(ctx, opRead, off, int64(len(p))); err != nil {
		return err
	}
	return d.Device.ReadAt(ctx, p, off)
}

// WriteAt writes unless a fault says otherwise.
func (d *Faulty) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := d.before(ctx, opWrite, off, int64(len(p))); err != nil {
		return err
	}
	return d.Device.WriteAt(ctx, p, off)
}

// Flush flushes unless a fault says otherwise.
func (d *Faulty) Flush(ctx context.Context) error {
	if err := d.before(ctx, opFlush, 0, 0); err != nil {
		return err
	}
	return d.Device.Flush(ctx)
}

// Close closes the wrapper only; the device below stays open for the other
// wrappers sharing it.
func (d *Faulty) Close() error { return nil }
