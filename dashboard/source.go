package dashboard

import (
	"context"
	"time"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// Source is what a node offers its dashboard. Every method is bounded by
// ctx (the Server gives each reading Config.ReadTimeout) and answers from
// the node's memory or with a few etcd requests. An error is shown on the
// page as a problem with that part; it never stops the dashboard.
type Source interface {
	// Status is the node's view of the cluster (members, leases, roles,
	// etcd members), as /api/status serves it.
	Status(ctx context.Context) cluster.Status
	// Locks is the lock table as the node's lock manager sees it; an
	// error while the lock manager is not running.
	Locks(ctx context.Context) (LockTable, error)
	// Recoveries are the recovery records kept in etcd.
	Recoveries(ctx context.Context) ([]recovery.Record, error)
	// Volume is the shared volume's status; nil and no error when the
	// node has no volume.
	Volume(ctx context.Context) (*mirror.Status, error)
}

// TrafficSource is the optional ability of a Source whose node runs the
// web tier: the cumulative counters of every node it knows about.
type TrafficSource interface {
	Traffic(ctx context.Context) ([]TrafficCounters, error)
}

// ServiceSource is the optional ability of a Source whose cluster manages
// service addresses.
type ServiceSource interface {
	Services(ctx context.Context) ([]ServiceRow, error)
}

// LockTable is the part of a lock manager's replica the dashboard shows.
type LockTable struct {
	Locks []dlm.LockInfo
	Waits []dlm.WaitEdge
	// Dead are the dead owners that still own requests.
	Dead []dlm.Owner
	// Check is the lock table check's result; nil when it holds.
	Check error
}

// TrafficCounters are one node's cumulative web tier counters; the Board
// turns two successive readings into rates.
type TrafficCounters struct {
	Node string
	// Requests counts answered requests, Errors those answered with a
	// 5xx status, both since the node's web tier started.
	Requests, Errors uint64
	// P99 is the 99th percentile of request latency over the web tier's
	// recent window.
	P99 time.Duration
}

// Reading is everything read from a Source at one moment: the input of
// Board.Observe.
type Reading struct {
	Time          time.Time
	Status        cluster.Status
	Locks         *LockTable
	LocksErr      error
	Recoveries    []recovery.Record
	RecoveriesErr error
	Volume        *mirror.Status
	VolumeErr     error
	Traffic       []TrafficCounters
	TrafficErr    error
	Services      []ServiceRow
	ServicesErr   error
}

// Read takes one Reading of src at now, each part bounded by ctx.
func Read(ctx context.Context, src Source, now time.Time) Reading {
	r := Reading{Time: now}
	r.Status = src.Status(ctx)
	if lt, err := src.Locks(ctx); err != nil {
		r.LocksErr = err
	} else {
		r.Locks = &lt
	}
	r.Recoveries, r.RecoveriesErr = src.Recoveries(ctx)
	r.Volume, r.VolumeErr = src.Volume(ctx)
	if ts, ok := src.(TrafficSource); ok {
		r.Traffic, r.TrafficErr = ts.Traffic(ctx)
	}
	if ss, ok := src.(ServiceSource); ok {
		r.Services, r.ServicesErr = ss.Services(ctx)
	}
	return r
}
