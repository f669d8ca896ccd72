package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev"
	_ "github.com/shoal-ha/shoal/blockdev/iscsi" // iscsi:// legs
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/blockdev/mirror/etcdstate"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/keys"
)

// volumeService opens the shared volume for each incarnation: it registers
// the incarnation's reservation key on every leg that has reservations,
// puts a self-fence guard in front of every leg, and opens the mirror with
// the lock manager's region locks. When the incarnation ends the guard
// stops all I/O at once and the volume is closed.
type volumeService struct {
	n   *cluster.Node
	cfg cluster.VolumeConfig
	log hclog.Logger

	mu  sync.Mutex
	cur *volumeIncarnation
}

// volumeIncarnation is the volume as one incarnation uses it.
type volumeIncarnation struct {
	vol    *mirror.Volume
	guard  *fencing.Guard
	pr     *fencing.ReservationFencer // nil when no leg has reservations
	raw    []blockdev.Device          // this node's connections to the legs
	names  []string
	cancel context.CancelFunc
	// life ends with the incarnation's use of the volume (cancel); the
	// operators' resyncs run under it, counted in bg.
	life context.Context
	bg   sync.WaitGroup
	// resyncing is set while an operator's resync runs (one at a time).
	resyncing atomic.Bool
	// scrub is the operator's scrub: running or the last one's outcome.
	scrubMu sync.Mutex
	scrub   ScrubState
	// openLeg opens a leg by address the way the volume's legs are
	// opened (behind the self-fence guard).
	openLeg func(ctx context.Context, addr string) (blockdev.Device, error)
}

func newVolumeService(n *cluster.Node) *volumeService {
	return &volumeService{n: n, cfg: n.Config().Volume, log: n.Logger().Named("volume")}
}

func (v *volumeService) enabled() bool { return len(v.cfg.Legs) > 0 }

// slotKey records which bitmap slot an incarnation writes with; it outlives
// the incarnation so that whichever node coordinates its recovery can merge
// that slot's bitmap.
func slotKey(prefix, name, incarnation string) string {
	return keys.Of(prefix).Slot(name, incarnation)
}

// start opens the volume for sess, whose locks d hands out.
func (v *volumeService) start(ctx context.Context, sess *cluster.Session, d *dlm.Node) error {
	if !v.enabled() {
		return nil
	}
	cfg := v.n.Config()
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout())
	defer cancel()
	vi, err := v.open(ctx, sess, d, *v.cfg.Slot)
	if err != nil {
		return err
	}
	sf, err := fencing.NewSelfFence(fencing.SelfFenceConfig{
		Deadline: sess.Deadline, Lost: sess.Lost(), StopIO: vi.guard.Stop,
		Watchdog: v.cfg.Watchdog, Logger: v.log.Named("self-fence"),
	})
	if err != nil {
		vi.vol.Close()
		return err
	}
	sctx, scancel := context.WithCancel(context.Background())
	vi.cancel, vi.life = scancel, sctx
	go sf.Run(sctx)
	v.mu.Lock()
	v.cur = vi
	v.mu.Unlock()
	v.log.Info("volume open", "legs", len(vi.raw), "slot", *v.cfg.Slot, "reservations", vi.pr != nil, "size", vi.vol.Size())
	return nil
}

// openForRecovery opens the volume without a bitmap slot for sess, for
// the recovery coordinator while this node's own volume is not open: the
// node's own open may be waiting for the very recovery (a region its
// previous incarnation left locked), so the recovery must not need it.
// The caller closes the handle with closeRecoveryVolume.
func (v *volumeService) openForRecovery(ctx context.Context, d *dlm.Node) (*volumeIncarnation, error) {
	sess := v.n.Session()
	if sess == nil {
		return nil, fmt.Errorf("%w: no registered incarnation", ErrNoVolume)
	}
	if d == nil {
		return nil, fmt.Errorf("%w: the lock manager is not running", ErrNoVolume)
	}
	octx, cancel := context.WithTimeout(ctx, v.n.Config().StartTimeout())
	defer cancel()
	vi, err := v.open(octx, sess, d, mirror.NoSlot)
	if err != nil {
		return nil, err
	}
	v.log.Info("volume opened without a slot for a recovery (this node's own volume is not open)")
	return vi, nil
}

// closeRecoveryVolume closes a handle from openForRecovery.
func closeRecoveryVolume(vi *volumeIncarnation) {
	vi.vol.Close()
	vi.guard.Stop("recovery done")
}

// open connects to every leg behind a self-fence guard of sess, registers
// sess's reservation key where legs have reservations, and opens the
// mirror with slot (mirror.NoSlot for a handle that only recovers) and d's
// region locks.
func (v *volumeService) open(ctx context.Context, sess *cluster.Session, d *dlm.Node, slot int) (*volumeIncarnation, error) {
	cfg := v.n.Config()
	vi := &volumeIncarnation{guard: fencing.NewGuard(sess.Deadline, nil), names: v.cfg.Legs}
	vi.guard.ReportLateWrites(v.log.Named("guard"))
	// A leg that reconnects may restore this incarnation's reservation
	// only while the incarnation may still write: after its deadline (or a
	// stop) the cluster may have fenced it, and re-registering would undo
	// that fence.
	opts := blockdev.OpenOptions{Logger: v.log.Named("leg"), MayRegainAccess: vi.guard.Check}
	fail := func(err error) (*volumeIncarnation, error) {
		for _, dev := range vi.raw {
			dev.Close()
		}
		return nil, err
	}
	for _, addr := range v.cfg.Legs {
		dev, err := blockdev.Open(ctx, addr, opts)
		if err != nil {
			return fail(fmt.Errorf("volume leg %s: %w", addr, err))
		}
		vi.raw = append(vi.raw, dev)
	}
	if slot != mirror.NoSlot {
		if _, err := v.n.Client().Put(ctx, slotKey(cfg.Prefix(), sess.Name(), sess.Incarnation()), fmt.Sprint(slot)); err != nil {
			return fail(fmt.Errorf("recording bitmap slot: %w", err))
		}
	}
	// Register this incarnation's key before the first write, so the
	// reservation lets its writes through and a fence can cut them off.
	if legs := fencing.LegsOf(vi.names, vi.raw); len(legs) > 0 && v.cfg.FencingMethod() != cluster.FenceLease {
		pr, err := fencing.NewReservationFencer(fencing.ReservationConfig{
			Self:   fencing.NewNodeRef(sess.Name(), sess.Incarnation(), int64(sess.LeaseID())),
			Legs:   func() []fencing.Leg { return fencing.LegsOf(vi.names, vi.raw) },
			Logger: v.log.Named("reservations"),
		})
		if err != nil {
			return fail(err)
		}
		if err := pr.Join(ctx); err != nil {
			return fail(fmt.Errorf("registering reservation key: %w", err))
		}
		vi.pr = pr
	} else if v.cfg.FencingMethod() == cluster.FenceReservations {
		return fail(errors.New("volume.fencing is \"reservations\" but no leg supports persistent reservations"))
	}
	legs := make([]blockdev.Device, len(vi.raw))
	for i, dev := range vi.raw {
		legs[i] = vi.guard.Wrap(dev)
	}
	mcfg := mirror.DefaultConfig(slot)
	if cfg.Profile == cluster.ProfileFast {
		mcfg = mirror.FastConfig(slot)
	}
	mcfg.Legs = legs
	mcfg.Locker = dlmRegions{d}
	mcfg.Store = etcdstate.New(v.n.Client(), cfg.Prefix())
	mcfg.Logger = v.log
	mcfg.OpenLeg = func(ctx context.Context, addr string) (blockdev.Device, error) {
		dev, err := blockdev.Open(ctx, addr, opts)
		if err != nil {
			return nil, err
		}
		return vi.guard.Wrap(dev), nil
	}
	vol, err := mirror.Open(ctx, mcfg)
	if err != nil {
		return fail(fmt.Errorf("opening volume %s: %w", v.cfg.VolumeName(), err))
	}
	vi.vol, vi.openLeg = vol, mcfg.OpenLeg
	return vi, nil
}

// stop ends the incarnation's use of the volume: I/O is stopped at once
// (a lost lease) or after in-flight writes (a clean stop).
func (v *volumeService) stop(clean bool) {
	v.mu.Lock()
	vi := v.cur
	v.cur = nil
	v.mu.Unlock()
	if vi == nil {
		return
	}
	if !clean {
		vi.guard.Stop("lease lost or no etcd quorum")
	}
	vi.cancel()
	// An operator's resync stops at its next region (its cursor is kept;
	// the next one resumes there).
	waitBounded(&vi.bg, v.n.Config().RequestTimeout())
	// A clean close flushes the legs and clears this slot's bitmap; a leg
	// that does not answer, or a leg failure that cannot be recorded
	// without quorum, must not hold the stop up. Past the bound, I/O is
	// stopped: the writes acknowledged are on the legs already, and the
	// marks left in the bitmap only cost a resync.
	closed := make(chan error, 1)
	go func() { closed <- vi.vol.Close() }()
	bound := v.n.Config().RequestTimeout()
	select {
	case err := <-closed:
		if err != nil {
			v.log.Warn("closing volume", "error", err)
		}
	case <-time.After(bound):
		v.log.Warn("closing the volume takes too long (a leg does not answer, or etcd has no quorum); stopping its I/O and leaving the bitmap marks for a resync", "waited", bound)
		vi.guard.Stop("shutdown: volume close did not finish")
		select {
		case err := <-closed:
			if err != nil {
				v.log.Warn("closing volume", "error", err)
			}
		case <-time.After(bound):
			v.log.Error("volume close still running after its I/O was stopped; leaving it", "waited", 2*bound)
		}
	}
	if clean {
		vi.guard.Stop("shutdown")
	}
}

// current returns the open volume, or an error saying why there is none.
func (v *volumeService) current() (*volumeIncarnation, error) {
	if !v.enabled() {
		return nil, fmt.Errorf("%w: this node has no volume configured", ErrNoVolume)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil {
		return nil, fmt.Errorf("%w: no registered incarnation", ErrNoVolume)
	}
	return v.cur, nil
}

// victimSlot reads the bitmap slot a dead incarnation wrote with.
func (v *volumeService) victimSlot(ctx context.Context, victim fencing.NodeRef) (int, bool, error) {
	resp, err := v.n.Client().Get(ctx, slotKey(v.n.Config().Prefix(), victim.Name, victim.Incarnation))
	if err != nil {
		return 0, false, err
	}
	if len(resp.Kvs) == 0 {
		return 0, false, nil
	}
	var slot int
	if err := json.Unmarshal(resp.Kvs[0].Value, &slot); err != nil {
		return 0, false, fmt.Errorf("slot record of %s: %w", victim, err)
	}
	return slot, true, nil
}

// dlmRegions gives the mirror its region locks from the lock manager.
type dlmRegions struct{ d *dlm.Node }

// LockRegion takes the region as a dlm region lock: EX or PR, and with
// the recovery option when the mirror asks for a recovery lock (granted
// over the locks a dead node left behind).
func (r dlmRegions) LockRegion(ctx context.Context, req mirror.RegionRequest) (mirror.RegionLock, error) {
	mode := dlm.PR
	if req.Exclusive {
		mode = dlm.EX
	}
	var opts []dlm.Option
	if req.Recovery {
		opts = append(opts, dlm.Recovery())
	}
	l, err := r.d.Acquire(ctx, dlm.Region(req.Volume, uint64(req.Off), uint64(req.Off+req.Length)), mode, opts...)
	if err != nil {
		return nil, err
	}
	return dlmRegionLock{l}, nil
}

// dlmRegionLock is a held dlm lock as the mirror sees it: its fencing
// token, its Use check, its release.
type dlmRegionLock struct{ l *dlm.Lock }

func (l dlmRegionLock) Token() uint64 { return uint64(l.l.Token()) }
func (l dlmRegionLock) Use() error    { return l.l.Use() }
func (l dlmRegionLock) Release()      { l.l.Release() }

// HoldRegion lets the mirror cache checksum areas under lock-manager locks
// it keeps until their blocking callback (a *dlm.Lock is a RegionHold).
// req.Try is the lock manager's try-lock; its refusal matches
// mirror.ErrWouldBlock as well as dlm.ErrWouldBlock.
func (r dlmRegions) HoldRegion(ctx context.Context, req mirror.RegionRequest) (mirror.RegionHold, error) {
	mode := dlm.PR
	if req.Exclusive {
		mode = dlm.EX
	}
	var opts []dlm.Option
	if req.Recovery {
		opts = append(opts, dlm.Recovery())
	}
	if req.Try {
		opts = append(opts, dlm.Try())
	}
	l, err := r.d.Acquire(ctx, dlm.Region(req.Volume, uint64(req.Off), uint64(req.Off+req.Length)), mode, opts...)
	if errors.Is(err, dlm.ErrWouldBlock) {
		return nil, fmt.Errorf("%w: %w", mirror.ErrWouldBlock, err)
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// waitBounded waits for wg, at most d.
func waitBounded(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
