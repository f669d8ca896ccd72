package fencing

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/clock"
)

// ErrSelfFenced: this incarnation passed its self-fence deadline or
// stopped its volume I/O, so the I/O was refused (or, if it was in
// flight, cut short: a write may or may not have reached the disk). Not
// retriable: the node must rejoin as a new incarnation.
// It matches blockdev.ErrFenced, so the mirror does not take the refusal
// for a failed leg.
var ErrSelfFenced = fmt.Errorf("fencing: this incarnation fenced itself: %w", blockdev.ErrFenced)

// Guard is the gate in front of one incarnation's volume I/O. Every read
// and write checks the self-fence deadline on the node's own clock before
// it is issued, so a node that was paused past its deadline (SIGSTOP,
// a long GC, a hung VM) and wakes up writes nothing; and Stop fails the
// I/O in flight and refuses the rest at once. SelfFence's StopIO is
// normally Guard.Stop.
type Guard struct {
	deadline func() time.Time
	clk      clock.Clock

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	reason string
	late   hclog.Logger // nil: late writes are not reported
}

// ReportLateWrites makes the guard log, at error level on log, every write
// that passed its check before the self-fence deadline and returned after
// it. Such a write was either under way when the node stopped (it reached
// the disk before the deadline) or was issued late: the node was paused
// between the check and the system call. With reservations the target
// refuses a late write; with lease-only fencing it may reach the leg after
// another node's write, the one case the check cannot close (a watchdog
// does). The line names the offset and length, so an operator (or a test)
// can tell that case from a write that never passed the guard. Call it
// before the guard is used.
func (g *Guard) ReportLateWrites(log hclog.Logger) { g.late = log }

// NewGuard returns an open gate for the incarnation whose self-fence
// deadline is deadline (dlm.Member.Deadline). A nil clock is real time.
func NewGuard(deadline func() time.Time, clk clock.Clock) *Guard {
	if clk == nil {
		clk = clock.Real()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Guard{deadline: deadline, clk: clk, ctx: ctx, cancel: cancel}
}

// Stop closes the gate for good: I/O in flight has its context cancelled
// and every later call fails with ErrSelfFenced.
func (g *Guard) Stop(reason string) {
	g.mu.Lock()
	if g.reason == "" {
		g.reason = reason
	}
	g.mu.Unlock()
	g.cancel()
}

// Check returns nil while I/O may be issued, and an error wrapping
// ErrSelfFenced once the gate is stopped or the deadline has passed.
func (g *Guard) Check() error {
	if g.ctx.Err() != nil {
		g.mu.Lock()
		defer g.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrSelfFenced, g.reason)
	}
	now := g.clk.Now()
	if d := g.deadline(); !now.Before(d) {
		return fmt.Errorf("%w: deadline %s passed %v ago", ErrSelfFenced, d.Format(time.RFC3339Nano), now.Sub(d))
	}
	return nil
}

// Wrap returns dev behind the gate. Only the blockdev.Device methods are
// offered; the fencer talks to the legs' reservations directly.
func (g *Guard) Wrap(dev blockdev.Device) blockdev.Device { return guarded{g: g, dev: dev} }

// do runs op with a context that Stop cancels.
func (g *Guard) do(ctx context.Context, op func(context.Context) error) error {
	if err := g.Check(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(g.ctx, cancel)
	defer stop()
	err := op(ctx)
	if err != nil && g.ctx.Err() != nil {
		// The device's own error (a closed connection, say) is only
		// reported, not wrapped: the leg did nothing wrong.
		return fmt.Errorf("%w: cut short: %v", ErrSelfFenced, err)
	}
	return err
}

type guarded struct {
	g   *Guard
	dev blockdev.Device
}

func (d guarded) ReadAt(ctx context.Context, p []byte, off int64) error {
	return d.g.do(ctx, func(ctx context.Context) error { return d.dev.ReadAt(ctx, p, off) })
}

func (d guarded) WriteAt(ctx context.Context, p []byte, off int64) error {
	issued := false
	err := d.g.do(ctx, func(ctx context.Context) error {
		issued = true
		return d.dev.WriteAt(ctx, p, off)
	})
	if issued && d.g.late != nil {
		// The deadline only moves forward: the one read now is the
		// latest the write could have been covered by.
		now := d.g.clk.Now()
		if dl := d.g.deadline(); !now.Before(dl) {
			d.g.late.Error(LateWriteMessage, "offset", off, "length", len(p),
				"deadline", dl.Format(time.RFC3339Nano), "returned_after_deadline", now.Sub(dl), "error", err)
		}
	}
	return err
}

// LateWriteMessage is the text of the line ReportLateWrites logs.
const LateWriteMessage = "a write passed its self-fence check before the deadline and returned after it: with lease-only fencing it may have reached the leg late"

func (d guarded) Flush(ctx context.Context) error {
	return d.g.do(ctx, d.dev.Flush)
}

func (d guarded) Size() int64    { return d.dev.Size() }
func (d guarded) BlockSize() int { return d.dev.BlockSize() }
func (d guarded) Close() error   { return d.dev.Close() }
