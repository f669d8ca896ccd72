package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestClusterReplicatesAndSurvivesAMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	c := NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Client(0).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Client(2).Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("member 2 reads %v, %v", resp, err)
	}
	c.StopMember(1)
	all := c.NewClient(t)
	if _, err := all.Put(ctx, "k2", "v2"); err != nil {
		t.Fatalf("write with one member of three stopped: %v", err)
	}
	for _, ep := range c.Endpoints {
		if ep[:17] != "http://127.0.0.1:" {
			t.Fatalf("endpoint %s not on loopback", ep)
		}
	}
}
