package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/httpmetrics"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store/storenode"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/webnode"
)

// webParts builds the store's and the web tier's node parts from the web
// block, or none when the block sets no address. The store part comes
// first: the web part serves from the store it opened, and its replay of a
// dead node's journal hands the sessions' intents to the web tier's
// recovery handler.
// middleware wraps the web tier's handler (the request metrics).
func webParts(cfg cluster.Config, middleware func(http.Handler) http.Handler) ([]node.Part, error) {
	if cfg.Web.Addr == "" {
		return nil, nil
	}
	if cfg.Volume.Slot == nil {
		return nil, errors.New("web: volume.slot is required for the web tier")
	}
	wc := web.DefaultConfig()
	wc.Addr = cfg.Web.Addr
	wc.TLSCertFile, wc.TLSKeyFile = cfg.Web.TLSCert, cfg.Web.TLSKey
	if cfg.Web.ContentRoot != "" {
		wc.ContentRoot = cfg.Web.ContentRoot
	}
	wc.SeedDir = cfg.Web.SeedDir
	if cfg.Web.KeyRetention > 0 {
		wc.KeyRetention = cfg.Web.KeyRetention
		wc.CollectInterval = min(wc.CollectInterval, wc.KeyRetention)
	}
	wc.AccessLog = cfg.Web.AccessLog
	if cfg.Web.AccessLogFormat != "" {
		wc.AccessLogFormat = cfg.Web.AccessLogFormat
	}
	wc.AllowOrigins = cfg.Web.AllowOrigins
	if cfg.Web.LoopbackSendBuffer != nil {
		wc.LoopbackSendBuffer = *cfg.Web.LoopbackSendBuffer
	}
	if cfg.Web.WriteBehind != nil {
		wc.WriteBehind = *cfg.Web.WriteBehind
	}
	switch t := cfg.Web.SendTimeout; {
	case t == cluster.SendTimeoutOff:
		wc.SendTimeout = 0
	case t > 0:
		wc.SendTimeout = t
	}
	wc.Logger = cfg.Logger
	wc.Middleware = middleware
	if err := wc.Validate(); err != nil {
		return nil, err
	}
	sp := storenode.New(storenode.Config{Slot: *cfg.Volume.Slot, Format: true, Handlers: webnode.Handlers(wc),
		MaxCachedLocks: cfg.Web.MaxCachedLocks, Logger: cfg.Logger})
	wp := webnode.New(webnode.Config{Web: wc, Store: sp.Store, Logger: cfg.Logger, ReusePort: cfg.ReusePort})
	return []node.Part{sp, wp}, nil
}

// webMetrics measures the web tier's requests (node.TrafficReporter): the
// node puts them on /metrics and its dashboard. As a part it does nothing
// of its own on an incarnation.
type webMetrics struct{ *httpmetrics.Recorder }

func (webMetrics) Name() string                                        { return "web-metrics" }
func (webMetrics) Start(ctx context.Context, _ node.Incarnation) error { return nil }
func (webMetrics) Stop(clean bool)                                     {}
