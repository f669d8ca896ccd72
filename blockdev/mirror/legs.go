package mirror

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/shoal-ha/shoal/blockdev"
)

// FailLeg marks leg i failed cluster-wide (an operator taking it out). The
// last in-sync leg is refused with ErrLastInSyncLeg.
func (v *Volume) FailLeg(ctx context.Context, i int) error {
	id, err := v.legID(i)
	if err != nil {
		return err
	}
	return v.updateTable(ctx, func(t *LegTable) error {
		j, err := t.spare(id, i)
		if err != nil {
			return err
		}
		t.Legs[j].State, t.Legs[j].Cursor = LegFailed, 0
		return nil
	})
}

// spare returns the index in t of the leg with id (leg i of the volume)
// when the volume can do without it: it is not the last in-sync leg.
func (t *LegTable) spare(id uuid.UUID, i int) (int, error) {
	j := t.Find(id)
	if j < 0 {
		return 0, fmt.Errorf("%w: %d", ErrNoSuchLeg, i)
	}
	if t.Legs[j].State == LegInSync && t.InSync() == 1 {
		return 0, fmt.Errorf("%w: leg %d is the only in-sync leg", ErrLastInSyncLeg, j)
	}
	return j, nil
}

// RemoveLeg drops leg i from the volume. The last in-sync leg is refused.
func (v *Volume) RemoveLeg(ctx context.Context, i int) error {
	id, err := v.legID(i)
	if err != nil {
		return err
	}
	return v.updateTable(ctx, func(t *LegTable) error {
		j, err := t.spare(id, i)
		if err != nil {
			return err
		}
		t.Legs = append(t.Legs[:j], t.Legs[j+1:]...)
		return nil
	})
}

// ReturnLeg brings failed leg i back as resyncing: it gets every write from
// now on, and Resync copies the regions it missed. dev is the leg's device
// when the volume does not have it already (nil otherwise).
func (v *Volume) ReturnLeg(ctx context.Context, i int, dev blockdev.Device) error {
	id, err := v.legID(i)
	if err != nil {
		return err
	}
	var extra map[uuid.UUID]blockdev.Device
	if dev != nil {
		sb, err := readSuperblock(ctx, dev)
		if err != nil {
			return fmt.Errorf("mirror: return leg %d: %w", i, err)
		}
		if sb.Volume != v.vol {
			return fmt.Errorf("%w: device belongs to volume %s", ErrForeignLeg, sb.Volume)
		}
		if sb.Self != id {
			return fmt.Errorf("mirror: return leg %d: device is leg %s, not %s", i, sb.Self, id)
		}
		extra = map[uuid.UUID]blockdev.Device{id: dev}
	}
	return v.updateTableWith(ctx, extra, func(t *LegTable) error {
		j := t.Find(id)
		if j < 0 {
			return fmt.Errorf("%w: %d", ErrNoSuchLeg, i)
		}
		if t.Legs[j].State != LegFailed {
			return fmt.Errorf("mirror: return leg %d: leg is %s, not failed", i, t.Legs[j].State)
		}
		t.Legs[j].State, t.Legs[j].Cursor = LegResyncing, 0
		return nil
	})
}

// AddLeg adds dev as a new leg: its metadata is written, it gets every write
// from now on, and Resync copies every region to it. addr is how other nodes
// open it. A device holding a superblock of any volume is refused unless
// force is set.
func (v *Volume) AddLeg(ctx context.Context, dev blockdev.Device, addr string, force bool) (int, error) {
	if v.cfg.ReadOnly {
		return -1, ErrReadOnly
	}
	if len(v.view.Load().table.Legs) >= MaxLegs {
		return -1, fmt.Errorf("%w: volume already has %d legs", ErrBadGeometry, MaxLegs)
	}
	if dev.Size() < v.geo.LegSize() {
		return -1, fmt.Errorf("%w: new leg has %d bytes, the volume needs %d", ErrBadGeometry, dev.Size(), v.geo.LegSize())
	}
	if v.geo.BlockSize%dev.BlockSize() != 0 {
		return -1, fmt.Errorf("%w: new leg's block size %d does not divide the volume's %d", ErrBadGeometry, dev.BlockSize(), v.geo.BlockSize)
	}
	// A leg of another volume that a node has open is never taken; a
	// former leg of this volume carries this volume's markers, which say
	// nothing about it.
	if sb, err := readSuperblock(ctx, dev); err == nil && sb.Volume != v.vol {
		if err := checkNotOpen(ctx, dev); err != nil {
			return -1, fmt.Errorf("mirror: add leg: %w", err)
		}
	}
	if !force {
		if err := checkBlank(ctx, dev); err != nil {
			return -1, fmt.Errorf("mirror: add leg: %w", err)
		}
	}
	id := uuid.New()
	if err := dev.WriteAt(ctx, make([]byte, SuperblockSize), 0); err != nil {
		return -1, err
	}
	if err := writeEmptyMetadata(ctx, dev, v.geo, v.vol, false, 0, 1, nil); err != nil {
		return -1, fmt.Errorf("mirror: add leg: %w", err)
	}
	idx := -1
	err := v.updateTableWith(ctx, map[uuid.UUID]blockdev.Device{id: dev}, func(t *LegTable) error {
		if len(t.Legs) >= MaxLegs {
			return fmt.Errorf("%w: volume already has %d legs", ErrBadGeometry, MaxLegs)
		}
		t.Legs = append(t.Legs, LegInfo{UUID: id, Addr: addr, State: LegResyncing, Full: true})
		idx = len(t.Legs) - 1
		return nil
	})
	return idx, err
}

func (v *Volume) legID(i int) (uuid.UUID, error) {
	t := v.view.Load().table
	if i < 0 || i >= len(t.Legs) {
		return uuid.UUID{}, fmt.Errorf("%w: %d (volume has %d legs)", ErrNoSuchLeg, i, len(t.Legs))
	}
	return t.Legs[i].UUID, nil
}
