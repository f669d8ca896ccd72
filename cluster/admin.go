package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminServer is the node's admin HTTP listener: /healthz, /readyz,
// /metrics, /api/status and /api/leave. Other parts of the daemon add their
// own routes through Handle before Serve.
type AdminServer struct {
	n   *Node
	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener
}

// NewAdminServer binds the admin address (or takes the listener handed
// over in Config.Admin.Listener). Binding early makes a port in use a
// start error rather than a late surprise.
func NewAdminServer(n *Node) (*AdminServer, error) {
	ln := n.cfg.Admin.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", n.cfg.Admin.Addr); err != nil {
			return nil, err
		}
	}
	a := &AdminServer{n: n, mux: http.NewServeMux(), ln: ln}
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /api/status", a.status)
	a.mux.HandleFunc("GET /api/members", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, http.StatusOK, n.Members()) })
	a.mux.HandleFunc("POST /api/leave", a.leave)
	a.mux.HandleFunc("GET /api/leave", a.leaveProgress)
	a.srv = &http.Server{Handler: a.mux, ReadHeaderTimeout: 5 * time.Second}
	return a, nil
}

// Handle adds a route.
func (a *AdminServer) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// Registry is where other parts register their metrics.
func (a *AdminServer) Registry() *prometheus.Registry { return a.n.metrics.reg }

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
