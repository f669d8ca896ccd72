package dlm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestJoinAfterCompactionOfABigTable: the lock table's checkpoint is
// larger than etcd takes in one request (1.5 MiB by default), as a
// cluster of web nodes caching their grants makes it (about 40 bytes a
// lock with its value block). A node that joins after a compaction still
// starts from a checkpoint, written in parts, and agrees with the others.
func TestJoinAfterCompactionOfABigTable(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member and writes 2 MiB of value blocks")
	}
	c := etcdtest.NewCluster(t, 1)
	slow := func(cfg *Config) { cfg.CheckpointInterval = time.Hour } // checkpoints on demand only
	a := startTestNodeWith(t, c, 0, "a", slow)
	ctx := ctxT(t, 60*time.Second)
	la, err := a.n.Acquire(ctx, Named("x"), EX)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Release()

	// Value blocks of incompressible bytes stand for a big table: 32,000
	// of them make a checkpoint of about 2.2 MiB.
	const blocks = 32000
	cli := c.Client(0)
	res := func(i int) Resource { return Named(fmt.Sprintf("big/%05d", i)) }
	for i := 0; i < blocks; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			v := make([]byte, LVBSize)
			_, _ = rand.Read(v)
			ops = append(ops, clientv3.OpPut(a.n.keys.lvb(res(j)), mustJSON(lvbValue{Value: v, Valid: true})))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Get(ctx, "compact-here")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a to see the value blocks", func() bool {
		a.n.mu.Lock()
		defer a.n.mu.Unlock()
		return a.n.rev >= resp.Header.Revision
	})
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	x := startTestNodeWith(t, c, 0, "x", func(cfg *Config) { slow(cfg); cfg.StartTimeout = 20 * time.Second })
	checkAll(t, a, x)
	for _, i := range []int{0, 1, blocks / 2, blocks - 1} {
		x.n.mu.Lock()
		got, _ := x.n.rep.Table.LVB(res(i))
		x.n.mu.Unlock()
		a.n.mu.Lock()
		want, _ := a.n.rep.Table.LVB(res(i))
		a.n.mu.Unlock()
		if string(got) != string(want) {
			t.Fatalf("value block %d: the joiner has %x, a has %x", i, got, want)
		}
	}
	cp, err := cli.Get(ctx, a.n.keys.checkpoint())
	if err != nil || len(cp.Kvs) != 1 {
		t.Fatalf("checkpoint key: %v %v", cp, err)
	}
	parts, err := cli.Get(ctx, a.n.keys.s.DLMCheckpointParts(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(cp.Kvs[0].Value), "{") || len(parts.Kvs) < 3 {
		t.Fatalf("the checkpoint is not in parts: %.60q, %d parts", cp.Kvs[0].Value, len(parts.Kvs))
	}
	t.Logf("checkpoint of %d value blocks in %d parts", blocks, len(parts.Kvs))

	// The newcomer takes part in the queue like anyone else.
	la.Release()
	lx, err := x.n.Acquire(ctx, Named("x"), EX)
	if err != nil {
		t.Fatal(err)
	}
	lx.Release()
	checkAll(t, a, x)
}

// TestCheckpointInParts drives the checkpoint store directly: a
// checkpoint larger than a part is written in parts and read back whole,
// a newer one removes the older one's parts, a writer that lost the race
// leaves none behind, and damaged or missing parts are errors, never a
// wrong table.
func TestCheckpointInParts(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	cli := c.Client(0)
	ctx := ctxT(t, 30*time.Second)
	const prefix = "/shoal-cp"
	k := newKeyspace(prefix)

	// A table to checkpoint: a few locks and value blocks.
	rep := NewReplica(prefix)
	rev := int64(2)
	for i := range 40 {
		o := Owner{"n1", "1"}
		r := Named(fmt.Sprintf("r%02d", i))
		if _, err := rep.Table.Request(rev, Request{ID: k.req(o, uint64(i)), Owner: o, Resource: r, Mode: EX}); err != nil {
			t.Fatal(err)
		}
		rev++
		v := make([]byte, LVBSize)
		_, _ = rand.Read(v)
		if err := rep.Table.SetLVB(rev, r, v, true); err != nil {
			t.Fatal(err)
		}
		rev++
	}
	data, err := rep.Checkpoint(rev)
	if err != nil {
		t.Fatal(err)
	}
	want := formatLocks(rep.Table.Locks())
	countParts := func() int {
		resp, err := cli.Get(ctx, k.s.DLMCheckpointParts(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return int(resp.Count)
	}
	read := func() (*Replica, error) {
		resp, err := cli.Get(ctx, k.checkpoint())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("checkpoint key: %v %v", resp, err)
		}
		return checkpointReplica(ctx, cli, prefix, resp.Kvs[0].Value, resp.Header.Revision)
	}
	modRev := func() int64 {
		resp, err := cli.Get(ctx, k.checkpoint())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return resp.Kvs[0].ModRevision
	}

	// In parts of 256 bytes.
	part := 256
	n := (len(data) + part - 1) / part
	ok, writes, err := putCheckpoint(ctx, cli, k, 0, rev, "n1", data, part)
	if err != nil || !ok || writes != n+1 {
		t.Fatalf("first checkpoint: stored %v, %d writes (want %d), %v", ok, writes, n+1, err)
	}
	if got := countParts(); got != n {
		t.Fatalf("%d parts in etcd, want %d", got, n)
	}
	r, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if got := formatLocks(r.Table.Locks()); got != want || r.Table.Revision() != rev {
		t.Fatalf("read back at revision %d:\n%s\nwant at %d:\n%s", r.Table.Revision(), got, rev, want)
	}

	// A writer that saw an older checkpoint loses, and its parts go.
	if ok, _, err := putCheckpoint(ctx, cli, k, 0, rev+1, "n2", data, part); err != nil || ok {
		t.Fatalf("stale writer: stored %v, %v", ok, err)
	}
	if got := countParts(); got != n {
		t.Fatalf("%d parts after a lost race, want %d", got, n)
	}

	// A newer checkpoint removes the older one's parts, also those of a
	// writer that died before its manifest.
	orphan := k.s.DLMCheckpointPart(cpRev(rev+1), "n3", "0000")
	if _, err := cli.Put(ctx, orphan, "left by a writer that died"); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := putCheckpoint(ctx, cli, k, modRev(), rev+2, "n2", data, part); err != nil || !ok {
		t.Fatalf("second checkpoint: stored %v, %v", ok, err)
	}
	if got := countParts(); got != n {
		t.Fatalf("%d parts after a newer checkpoint, want its %d", got, n)
	}
	if _, err := read(); err != nil {
		t.Fatal(err)
	}

	// A checkpoint in one value removes every older part.
	if ok, _, err := putCheckpoint(ctx, cli, k, modRev(), rev+3, "n1", data, len(data)); err != nil || !ok {
		t.Fatalf("checkpoint in one value: stored %v, %v", ok, err)
	}
	if got := countParts(); got != 0 {
		t.Fatalf("%d parts left beside a checkpoint in one value", got)
	}
	if r, err := read(); err != nil || formatLocks(r.Table.Locks()) != want {
		t.Fatalf("checkpoint in one value read back: %v", err)
	}

	// Damaged and missing parts.
	if ok, _, err := putCheckpoint(ctx, cli, k, modRev(), rev+4, "n1", data, part); err != nil || !ok {
		t.Fatalf("checkpoint: stored %v, %v", ok, err)
	}
	p1 := k.s.DLMCheckpointPart(cpRev(rev+4), "n1", "0001")
	if _, err := cli.Put(ctx, p1, strings.Repeat("x", part)); err != nil {
		t.Fatal(err)
	}
	if _, err := read(); err == nil || errors.Is(err, errCheckpointReplaced) || !strings.Contains(err.Error(), "do not match") {
		t.Fatalf("damaged part read: %v", err)
	}
	if _, err := cli.Delete(ctx, p1); err != nil {
		t.Fatal(err)
	}
	if _, err := read(); !errors.Is(err, errCheckpointReplaced) {
		t.Fatalf("missing part read: %v", err)
	}
	for _, bad := range []string{`{"rev":1}`, `{"rev":5,"writer":"a/b","parts":1,"size":9}`, `{"parts":`} {
		if _, err := checkpointReplica(ctx, cli, prefix, []byte(bad), 0); err == nil {
			t.Fatalf("manifest %s accepted", bad)
		}
	}

	// Too many parts for one transaction: refused before any write.
	if _, writes, err := putCheckpoint(ctx, cli, k, modRev(), rev+5, "n1", data, len(data)/(maxCheckpointParts+1)); err == nil || writes != 0 {
		t.Fatalf("a checkpoint of more than %d parts: %d writes, %v", maxCheckpointParts, writes, err)
	}
}
