package dlm

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func FuzzParseResource(f *testing.F) {
	for _, s := range []string{"foo", "vol@0-4096", "vol@", "a@1-0", "x/y:z", "@1-2", "v@18446744073709551615-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseResource(s)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("parsed %q into invalid %+v: %v", s, r, err)
		}
		back, err := ParseResource(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), back, err)
		}
	})
}

// FuzzReplicaApply feeds arbitrary keys and values (as a misbehaving
// writer could put them under the DLM's prefix) and checks the replica
// neither crashes nor breaks the table's invariants.
func FuzzReplicaApply(f *testing.F) {
	f.Add("/p/members/n1", `{"name":"n1","incarnation":"1"}`, "/p/dlm/req/n1/1/01", `{"res":{"name":"a"},"mode":"EX"}`, true)
	f.Add("/p/members/n1", `{"incarnation":"2"}`, "/p/dlm/req/n1/2/01", `{"res":{"volume":"v","start":1,"end":0},"mode":"PR"}`, false)
	f.Add("/p/dlm/lvb/a", `{"value":"eA==","valid":true}`, "/p/dlm/req/x", `{}`, true)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, del bool) {
		r := NewReplica("/p")
		rev := int64(1)
		apply := func(typ mvccpb.Event_EventType, k, v string) {
			rev++
			_, _ = r.Apply(&mvccpb.Event{Type: typ, Kv: &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v), ModRevision: rev, CreateRevision: rev}})
			if err := r.Table.Check(); err != nil {
				t.Fatalf("after %s %q=%q: %v", typ, k, v, err)
			}
		}
		apply(mvccpb.PUT, k1, v1)
		apply(mvccpb.PUT, k2, v2)
		apply(mvccpb.PUT, k2, v1)
		if del {
			apply(mvccpb.DELETE, k1, "")
		}
		apply(mvccpb.DELETE, k2, "")
	})
}

func FuzzRestoreReplica(f *testing.F) {
	r := NewReplica("/p")
	_, _ = r.Table.Request(2, Request{ID: "/p/dlm/req/n1/1/1", Owner: Owner{"n1", "1"}, Resource: Named("a"), Mode: EX})
	_, _ = r.Table.Request(3, Request{ID: "/p/dlm/req/n2/1/1", Owner: Owner{"n2", "1"}, Resource: Named("a"), Mode: PR})
	data, err := r.Checkpoint(3)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := RestoreReplica("/p", b)
		if err != nil {
			return
		}
		if err := r.Table.Check(); err != nil {
			t.Fatalf("restored a table that fails Check: %v", err)
		}
	})
}
