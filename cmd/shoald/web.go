package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/webnode"
)

// webPart builds the web tier's node part from the web block, or nil when
// the block sets no address. The part asks the running node which slot a
// dead incarnation wrote with; started is set once the node runs.
func webPart(cfg cluster.Config, started *atomic.Pointer[node.Node]) (node.Part, error) {
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
	wc.Logger = cfg.Logger
	if err := wc.Validate(); err != nil {
		return nil, err
	}
	return webnode.New(webnode.Config{
		Web:    wc,
		Slot:   *cfg.Volume.Slot,
		Format: true,
		SlotOf: func(ctx context.Context, victim fencing.NodeRef) (int, error) {
			n := started.Load()
			if n == nil {
				return 0, errors.New("web: the node is still starting")
			}
			slot, ok, err := n.VictimSlot(ctx, victim)
			if err != nil {
				return 0, err
			}
			if !ok {
				return 0, fmt.Errorf("web: %s registered no volume slot", victim)
			}
			return slot, nil
		},
		Logger: cfg.Logger,
	}), nil
}
