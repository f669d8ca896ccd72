package cluster

import (
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestReloadPlan(t *testing.T) {
	base := DefaultConfig()
	base.NodeName, base.DataDir = "node1", "/var/lib/shoal/node1"
	slot := 1

	next := base
	if live, restart := ReloadPlan(base, next); len(live)+len(restart) != 0 {
		t.Fatalf("no change, got live %v restart %v", live, restart)
	}
	next.Logger = hclog.NewNullLogger() // not part of the file
	next.LogLevel = "debug"
	next.Lease.TTL = 30 * time.Second
	next.Volume.Legs = []string{"a.img", "b.img"}
	next.Volume.Slot = &slot
	next.Admin.Addr = "127.0.0.1:9999"
	live, restart := ReloadPlan(base, next)
	if !reflect.DeepEqual(live, []string{"log_level"}) {
		t.Errorf("live %v", live)
	}
	if want := []string{"admin.addr", "lease.ttl", "volume.legs", "volume.slot"}; !reflect.DeepEqual(restart, want) {
		t.Errorf("restart %v, want %v", restart, want)
	}
}
