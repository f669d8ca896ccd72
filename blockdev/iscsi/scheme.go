package iscsi

import (
	"context"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev"
)

func init() {
	blockdev.RegisterScheme("iscsi", openAddr)
}

// ConfigFromURL returns DefaultConfig filled from an iscsi:// address.
func ConfigFromURL(addr string) (Config, error) {
	a, err := ParseURL(addr)
	if err != nil {
		return Config{}, err
	}
	cfg := DefaultConfig()
	cfg.Portal, cfg.Target, cfg.LUN = a.Portal, a.Target, a.LUN
	cfg.User, cfg.Secret = a.User, a.Password
	return cfg, nil
}

// openAddr is the blockdev opener for iscsi:// addresses.
func openAddr(ctx context.Context, addr string, opts blockdev.OpenOptions) (blockdev.Device, error) {
	a, err := ParseURL(addr)
	if err != nil {
		return nil, err
	}
	if a.Target == "" || !a.HasLUN {
		return nil, fmt.Errorf("iscsi: address %s names no target and LUN (iscsi://host[:port]/target-iqn/lun)", a)
	}
	if opts.Create {
		return nil, fmt.Errorf("iscsi: cannot create %s: %w", a, blockdev.ErrNotSupported)
	}
	cfg, _ := ConfigFromURL(addr)
	cfg.Logger = opts.Logger
	cfg.ReadOnly = opts.ReadOnly
	if may := opts.MayRegainAccess; may != nil {
		cfg.Reregister = func(uint64) error { return may() }
	}
	return Open(ctx, cfg)
}
