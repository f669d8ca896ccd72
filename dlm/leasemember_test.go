package dlm

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A client that leaves cleanly marks its member key as leaving before the
// key goes, so the cluster sees a departure and asks for no recovery.
func TestLeaseMemberLeaveMarksDeparture(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	c := etcdtest.NewCluster(t, 1)
	cli := c.Client(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := JoinAsClient(ctx, LeaseMemberConfig{Client: cli, Prefix: "/lm", Name: "tool", TTL: 2 * time.Second, Margin: 200 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, m.MemberKey(), clientv3.WithPrevKV())
	if err := m.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	var sawLeaving bool
	for resp := range wch {
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				var prev keys.MemberRecord
				if ev.PrevKv == nil || json.Unmarshal(ev.PrevKv.Value, &prev) != nil || !prev.Leaving || prev.Kind != "client" {
					t.Fatalf("member key deleted without the leaving marker: %+v", ev.PrevKv)
				}
				sawLeaving = true
			}
		}
		if sawLeaving {
			break
		}
	}
	if !sawLeaving {
		t.Fatal("member key never deleted")
	}
}
