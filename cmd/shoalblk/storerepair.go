package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/store"
)

// exitError is an error with its own process exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process's exit status for the error.
func (e *exitError) ExitCode() int { return e.code }

// Exit statuses of store check --repair (e2fsck's): repaired and clean,
// problems left, the repair could not run.
const (
	exitRepaired    = 1
	exitLeft        = 4
	exitOperational = 8
)

// refuseOpenVolume fails with mirror.ErrVolumeOpen when a leg's
// open-volume marker says a node has the volume open.
func refuseOpenVolume(ctx context.Context, vf *volumeFlags, args []string) error {
	devs, err := openLegs(ctx, args, vf.logger(), true)
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	for i, d := range devs {
		slots, err := mirror.OpenSlots(ctx, d)
		if err != nil {
			return fmt.Errorf("leg %s: reading open-volume markers: %w", args[i], err)
		}
		if len(slots) > 0 {
			return withFlagHint(fmt.Errorf("%w: leg %s: node slots %v have it open", mirror.ErrVolumeOpen, args[i], slots), "--force-while-open")
		}
	}
	return nil
}

// runRepair is store check --repair: the volume opened writable as
// volSlot, store.Repair through it, every repair printed.
func runRepair(cmd *cobra.Command, vf *volumeFlags, args []string, volSlot, storeSlot int, forceOpen bool) error {
	ctx := cmd.Context()
	stdout := cmd.OutOrStdout()
	if !forceOpen {
		if err := refuseOpenVolume(ctx, vf, args); err != nil {
			return &exitError{exitOperational, err}
		}
	}
	vf.readOnly = false
	v, closeVol, err := vf.openVolume(ctx, args, volSlot, false, nil)
	if err != nil {
		return &exitError{exitOperational, err}
	}
	defer closeVol()
	rep, err := store.Repair(ctx, v, store.RepairOptions{Slot: storeSlot, Logger: vf.logger()})
	if vf.jsonOut && rep != nil {
		if perr := printJSON(stdout, rep); perr != nil && err == nil {
			err = perr
		}
	} else if rep != nil {
		for _, p := range rep.Repairs {
			fmt.Fprintln(stdout, "repaired:", p)
		}
		for _, n := range rep.Notes {
			fmt.Fprintln(stdout, "note:", n)
		}
		for _, p := range rep.Left {
			fmt.Fprintln(stdout, "left:", p)
		}
		if err == nil {
			fmt.Fprintf(stdout, "repair of the store through slot %d: %d repairs in %d passes, %d problems left\n", rep.Slot, len(rep.Repairs), rep.Passes, len(rep.Left))
		}
	}
	switch {
	case err != nil && rep != nil && rep.Repaired():
		return &exitError{exitLeft, fmt.Errorf("repair stopped: %w (run it again to go on)", err)}
	case err != nil:
		return &exitError{exitOperational, fmt.Errorf("repair: %w", err)}
	case len(rep.Left) > 0:
		return &exitError{exitLeft, fmt.Errorf("%d problems left after the repair", len(rep.Left))}
	case rep.Repaired():
		return &exitError{exitRepaired, fmt.Errorf("%d repairs made; the store is clean now", len(rep.Repairs))}
	}
	return nil
}
