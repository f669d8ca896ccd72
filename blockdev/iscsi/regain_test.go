package iscsi_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

// A node that may no longer write (past its self-fence deadline) must not
// restore its reservation key after a reconnect: the daemon vetoes it
// through blockdev.OpenOptions.MayRegainAccess.
func TestReregistrationVetoedThroughOpenOptions(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":regain")
	tgt.MustAddLUN(t, 1, 8<<20)
	ctx := testCtx(t)
	var vetoed atomic.Int32
	may := func() error {
		vetoed.Add(1)
		return errors.New("self-fence deadline passed")
	}
	dev, err := blockdev.Open(ctx, tgt.URL(1), blockdev.OpenOptions{MayRegainAccess: may})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	a := dev.(*iscsi.Device)
	const key = 0xcccc0003
	buf := make([]byte, 4096)
	if err := a.Register(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := a.Reserve(ctx, key, blockdev.WriteExclusiveRegistrantsOnly); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAt(ctx, buf, 0); err != nil {
		t.Fatalf("registered write: %v", err)
	}
	a.Session().DropConnection()
	err = a.WriteAt(ctx, buf, 0)
	if !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("write after a re-login whose re-registration was vetoed: %v, want reservation conflict", err)
	}
	if vetoed.Load() == 0 {
		t.Fatal("the veto was never asked")
	}
}
