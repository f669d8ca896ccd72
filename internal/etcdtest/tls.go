package etcdtest

import (
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// StartTLS starts a one-member embedded etcd that, like a Shoal node's
// member, serves clients only over mutual TLS: it presents cert/key and
// demands a client certificate signed by the CA in caFile. It listens on
// 127.0.0.1 on ports the kernel picks, is stopped when the test ends, and
// returns the client address (host:port).
func StartTLS(t testing.TB, caFile, certFile, keyFile string) string {
	t.Helper()
	ec := embed.NewConfig()
	ec.Name = "tls"
	ec.Dir = filepath.Join(t.TempDir(), "etcd")
	u0 := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{u0}, []url.URL{u0}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{u0}, []url.URL{u0}
	ec.InitialCluster = ec.Name + "=" + u0.String()
	info := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: true}
	ec.ClientTLSInfo, ec.PeerTLSInfo = info, info
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd did not start")
	}
	return e.Clients[0].Addr().String()
}
