package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// Run assembles a node from cfg (which must have passed Validate) and runs
// it until ctx ends (a clean stop) or the node leaves the cluster.
func Run(ctx context.Context, cfg cluster.Config) error {
	log := cfg.Logger
	if log == nil {
		log = cfg.NewLogger(os.Stderr)
		cfg.Logger = log
	}

	// A leg that cannot be opened at all is a configuration error: say
	// so before anything is created, rather than retrying incarnations.
	if err := checkLegs(ctx, cfg); err != nil {
		return err
	}
	n, err := cluster.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	locks := newLockService(n)
	vols := newVolumeService(n)
	role := newRecoveryRole(n, vols, locks)
	n.Role = role
	n.Watcher().Subscribe(role.observe)
	det, err := newDetectService(n, role)
	if err != nil {
		return err
	}
	if det != nil {
		n.DescribeMember = det.describe
	}
	// Each incarnation joins the lock manager, then opens the volume under
	// its locks; when it ends, the volume goes first.
	n.OnSession = func(s *cluster.Session) {
		d := locks.start(s)
		if d == nil {
			s.Abandon(errors.New("lock manager did not start"))
			return
		}
		if err := vols.start(s, d); err != nil {
			log.Error("volume did not open; abandoning this incarnation", "error", err)
			s.Abandon(err)
			return
		}
		if det != nil {
			if err := det.start(s); err != nil {
				log.Error("failure detector did not start", "error", err)
			}
		}
	}
	n.OnSessionEnd = func(s *cluster.Session, clean bool) {
		if det != nil {
			det.stop()
		}
		vols.stop(clean)
		locks.stop(s, clean)
	}
	var admin *cluster.AdminServer
	if cfg.Admin.Addr != "off" {
		if admin, err = cluster.NewAdminServer(n); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		if role.metrics, err = recovery.NewMetrics(admin.Registry()); err != nil {
			return err
		}
		if role.fenceMetrics, err = fencing.NewMetrics(admin.Registry()); err != nil {
			return err
		}
		admin.Handle("GET /api/locks", http.HandlerFunc(locks.handleLocks))
		admin.Handle("GET /api/recoveries", http.HandlerFunc(role.handleRecoveries))
		vols.routes(admin)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	adminDone := make(chan error, 1)
	if admin != nil {
		go func() { adminDone <- admin.Serve(runCtx) }()
		log.Info("admin listening", "addr", "http://"+admin.Addr())
	}
	err = n.Run(runCtx)
	cancel()
	if admin != nil {
		if aerr := <-adminDone; aerr != nil && err == nil {
			err = fmt.Errorf("admin listener: %w", aerr)
		}
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// checkLegs opens and closes every configured leg once.
func checkLegs(ctx context.Context, cfg cluster.Config) error {
	for _, addr := range cfg.Volume.Legs {
		octx, cancel := context.WithTimeout(ctx, cfg.StartTimeout())
		dev, err := blockdev.Open(octx, addr, blockdev.OpenOptions{Logger: cfg.Logger.Named("leg")})
		cancel()
		if err != nil {
			return fmt.Errorf("volume.legs: cannot open %s: %w", addr, err)
		}
		dev.Close()
	}
	return nil
}
