package cluster

import (
	"context"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A Status call that panics while the member stops is answered
// Unavailable; the same panic while it runs, or a panic in another call,
// still panics; calls that do not panic pass through.
func TestStatusWhileStoppingAnswersUnavailable(t *testing.T) {
	boom := func(context.Context, any) (any, error) { panic("nil bolt transaction") }
	ok := func(context.Context, any) (any, error) { return "answer", nil }
	call := func(stopping bool, method string, h grpc.UnaryHandler) (resp, panicked any, err error) {
		defer func() { panicked = recover() }()
		resp, err = statusWhileStopping(func() bool { return stopping })(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
		return resp, nil, err
	}
	if _, p, err := call(true, statusMethod, boom); p != nil || status.Code(err) != codes.Unavailable {
		t.Fatalf("Status panicking while stopping: err %v, panic %v; want Unavailable", err, p)
	}
	if _, p, _ := call(false, statusMethod, boom); p == nil {
		t.Fatal("Status panicking on a running member was hidden")
	}
	if _, p, _ := call(true, "/etcdserverpb.KV/Range", boom); p == nil {
		t.Fatal("a panic in another call was hidden")
	}
	if resp, p, err := call(true, statusMethod, ok); resp != "answer" || err != nil || p != nil {
		t.Fatalf("a Status that does not panic: %v %v %v", resp, err, p)
	}
	if serverStopping(nilServer)() {
		t.Fatal("no server yet counts as stopping")
	}
}

func nilServer() *etcdserver.EtcdServer { return nil }
