package web

import (
	"net/http"
	"slices"
	"strings"
)

// cors lets pages from the configured origins call the sessions API of
// every node (the demo's page fails over from 127.0.0.1 to 127.0.0.2), as
// the Fetch standard's CORS protocol asks: preflight OPTIONS answered 204,
// and the answer headers a client needs exposed.
func cors(origins []string, h http.Handler) http.Handler {
	if len(origins) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !slices.Contains(origins, origin) && !slices.Contains(origins, "*") {
			h.ServeHTTP(w, r)
			return
		}
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Add("Vary", "Origin")
		hd.Set("Access-Control-Expose-Headers", "Idempotent-Replayed, Retry-After, Location")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			hd.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
			hd.Set("Access-Control-Allow-Headers", "Content-Type, Idempotency-Key")
			hd.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	rest, ok := strings.CutPrefix(o, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(o, "https://")
	}
	return ok && rest != "" && !strings.ContainsAny(rest, "/ ")
}
