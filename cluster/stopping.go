package cluster

import (
	"context"

	"go.etcd.io/etcd/server/v3/etcdserver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// statusMethod is etcd's Maintenance/Status call: what other members ask
// each member for (Node.Status asks every member at once), and so what
// reaches a member at any moment of its shutdown.
const statusMethod = "/etcdserverpb.Maintenance/Status"

// statusWhileStopping is a gRPC interceptor for the embedded member's
// client server. etcd v3.7.3 answers Maintenance/Status with its storage
// version, read from the backend without checking that the server is not
// stopping: a Status that arrives after the member began stopping (a
// member removed from the cluster stops itself, as `shoald leave` does)
// reads a backend already closed and dies on a nil bolt transaction, and
// with it the whole process (the reads-after-close class of
// etcd-io/etcd#7322). A panic in that one call while stopping() holds is
// answered as codes.Unavailable, which a client takes as "ask another
// member"; every other panic still panics.
func statusWhileStopping(stopping func() bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		if info.FullMethod != statusMethod {
			return handler(ctx, req)
		}
		defer func() {
			if r := recover(); r != nil {
				if !stopping() {
					panic(r)
				}
				resp, err = nil, status.Error(codes.Unavailable, "etcd member stopping")
			}
		}()
		return handler(ctx, req)
	}
}

// serverStopping reports whether srv (once set) began stopping.
func serverStopping(srv func() *etcdserver.EtcdServer) func() bool {
	return func() bool {
		s := srv()
		if s == nil {
			return false
		}
		select {
		case <-s.StoppingNotify():
			return true
		default:
			return false
		}
	}
}
