package storenode

import (
	"context"
	"net/http"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/node"
)

var _ node.Mounter = (*Part)(nil)

// CheckTimeout bounds one online check through the admin API.
const CheckTimeout = 5 * time.Minute

// Mount adds the store's admin route:
//
//	GET /api/store/check   store.CheckReport of the online check (read-only role)
//
// The check reads the tree under shared locks of the node's own lock
// manager while the cluster keeps running (Store.Check); 503 between
// incarnations or on a node without a store, 500 when the check itself
// fails (problems found are in the report, not an error).
func (p *Part) Mount(a *cluster.AdminServer) {
	a.Handle("GET /api/store/check", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := p.Store()
		if st == nil {
			http.Error(w, "the store is not open on this node (no incarnation, or no volume)", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), CheckTimeout)
		defer cancel()
		rep, err := st.Check(ctx)
		if err != nil {
			http.Error(w, "store check: "+err.Error(), http.StatusInternalServerError)
			return
		}
		cluster.WriteJSON(w, http.StatusOK, rep)
	}))
}
