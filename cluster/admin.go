package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/shoal-ha/shoal/internal/adminauth"
	"github.com/shoal-ha/shoal/internal/portres"
)

// AdminServer is the node's admin HTTP listener: /healthz, /readyz,
// /metrics, /api/status and /api/leave. Other parts of the daemon add their
// own routes through Handle before Serve.
type AdminServer struct {
	n   *Node
	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener
	// token is the admin token (adminauth.TokenFile in the data directory).
	token string
}

// NewAdminServer binds the admin address (or takes the listener handed
// over in Config.Admin.Listener). Binding early makes a port in use a
// start error rather than a late surprise.
func NewAdminServer(n *Node) (*AdminServer, error) {
	ln := n.cfg.Admin.Listener
	if ln == nil {
		var err error
		if ln, err = portres.Listen(context.Background(), n.cfg.Admin.Addr, n.cfg.ReusePort); err != nil {
			return nil, err
		}
	}
	// HTTPS only: clients show a certificate from the cluster's CA or the
	// admin token kept in the data directory (adminauth).
	srvTLS, err := adminauth.ServerTLS(n.certs.CA, n.certs.Cert, n.certs.Key)
	if err != nil {
		if n.cfg.Admin.Listener == nil {
			ln.Close()
		}
		return nil, err
	}
	token, created, err := adminauth.LoadOrCreateToken(n.cfg.DataDir)
	if err != nil {
		if n.cfg.Admin.Listener == nil {
			ln.Close()
		}
		return nil, err
	}
	if created {
		n.log.Info("admin token created: open the dashboard with it (it is kept in the data directory)",
			"url", "https://"+ln.Addr().String()+"/ui/?token="+token, "file", filepath.Join(n.cfg.DataDir, adminauth.TokenFile))
	}
	a := &AdminServer{n: n, mux: http.NewServeMux(), ln: tls.NewListener(ln, srvTLS), token: token}
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /api/status", a.status)
	a.mux.HandleFunc("GET /api/members", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusOK, n.Members()) })
	a.mux.HandleFunc("POST /api/leave", a.leave)
	a.mux.HandleFunc("GET /api/leave", a.leaveProgress)
	guard := adminauth.Guard{Token: token, Public: adminauth.DefaultPublic}
	// Failed handshakes (a probe speaking plain HTTP, a certificate from
	// another CA) are the client's problem: debug lines, not stderr.
	errLog := n.log.Named("admin").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})
	a.srv = &http.Server{Handler: guard.Wrap(a.mux), ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	return a, nil
}

// Handle adds a route.
func (a *AdminServer) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// Registry is where other parts register their metrics.
func (a *AdminServer) Registry() *prometheus.Registry { return a.n.metrics.reg }

// Token is the admin token a browser or a tool may show instead of a
// client certificate.
func (a *AdminServer) Token() string { return a.token }

// URL is the admin API's base URL (https://host:port).
func (a *AdminServer) URL() string { return "https://" + a.Addr() }

// Addr is the bound address.
func (a *AdminServer) Addr() string { return a.ln.Addr().String() }

// Serve serves until ctx ends.
func (a *AdminServer) Serve(ctx context.Context) error {
	go a.n.probeEtcd(ctx, 2*time.Second)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		a.srv.Shutdown(sctx)
	}()
	if err := a.srv.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (a *AdminServer) healthz(w http.ResponseWriter, r *http.Request) {
	w.Write([]byte("ok\n"))
}

func (a *AdminServer) readyz(w http.ResponseWriter, r *http.Request) {
	if !a.n.Ready() {
		http.Error(w, "not ready: no registered incarnation with a trusted lease", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

func (a *AdminServer) status(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, a.n.Status(r.Context()))
}

func (a *AdminServer) leave(w http.ResponseWriter, r *http.Request) {
	if a.n.member != nil {
		ml, err := a.n.cli.MemberList(r.Context())
		if err != nil {
			WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		if len(ml.Members) <= 1 {
			WriteJSON(w, http.StatusConflict, map[string]string{"error": ErrLastMember.Error()})
			return
		}
	}
	a.n.Leave()
	WriteJSON(w, http.StatusAccepted, map[string]string{"result": "leaving"})
}

// WriteJSON writes v as indented JSON with the status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
