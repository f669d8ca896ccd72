package dlm

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/attempt"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/keys"
)

// Config configures a Node.
type Config struct {
	// Client talks to the etcd cluster. Required.
	Client *clientv3.Client
	// Member is the node incarnation that owns the locks. Required.
	Member Member
	// Prefix is the cluster's etcd key prefix, without a trailing slash
	// (the daemon uses "/shoal/CLUSTER"). Member keys live under Prefix/members/ and
	// the DLM's keys under Prefix/dlm/.
	Prefix string
	// Clock measures the self-fence deadline. Defaults to the wall clock.
	Clock clock.Clock
	// Logger receives the node's log lines. Defaults to a null logger.
	Logger hclog.Logger
	// CacheLocks keeps a lock at node level after its local users release
	// it, until another node needs it (lock caching). Default true.
	CacheLocks bool
	// MaxCached is how many idle cached locks a node keeps; beyond it the
	// oldest idle ones are released, a sixteenth of MaxCached at a time,
	// up to 64 releases to an etcd transaction. Zero means no limit.
	MaxCached int
	// DeadlockGrace is how long a wait-for cycle must persist before a
	// waiter that asked for deadlock errors gets ErrDeadlock. It leaves
	// blocking callbacks time to break cycles through cached locks.
	DeadlockGrace time.Duration
	// CheckpointInterval is how often (about) some node writes a
	// checkpoint of the lock table to etcd, so that joining nodes do not
	// need history that compaction may have removed. It must be well below
	// the cluster's compaction retention.
	CheckpointInterval time.Duration
	// CheckpointPartBytes is the largest etcd value a checkpoint is
	// written in: a larger one is written in parts of this size and a
	// manifest (etcd refuses requests over its --max-request-bytes, 1.5
	// MiB by default). Default 512 KiB.
	CheckpointPartBytes int
	// StartTimeout bounds how long Start may take to catch up with the
	// cluster's lock table.
	StartTimeout time.Duration
	// WriteAttemptTimeout bounds the first attempt at a lock-table write;
	// each later attempt gets twice as long, up to 5s. A write caught by an
	// etcd leader election is never answered (the member forwarded it to
	// the dead leader, and raft does not forward it again), so it is sent
	// again after this bound, or at once when LeaderChanges says a new
	// leader serves. Every write is idempotent, so a repeat is safe. About
	// twice the etcd election timeout. Default 1s.
	WriteAttemptTimeout time.Duration
	// LeaderChanges, when set, signals each change of the etcd leader that
	// Client's member follows (a node's embedded member: its
	// LeaderChangedNotify): a lock-table write in flight then is sent again
	// at once instead of waiting out its attempt bound. Nil (a client of an
	// external etcd) leaves only WriteAttemptTimeout.
	LeaderChanges attempt.LeaderChanges
	// OnAcquire, when set, sees every successful Acquire with its mode and
	// how long the caller waited for the grant (0 for a cached grant), on
	// the caller's goroutine after the grant: the feed of the lock-wait
	// histogram. It must not block.
	OnAcquire func(mode Mode, waited time.Duration)
}

// DefaultConfig returns a Config with defaults filled in; the caller sets
// Client, Member and Prefix.
func DefaultConfig() Config {
	return Config{
		Prefix:        keys.Cluster("shoal").Root(),
		Clock:         clock.Real(),
		Logger:        hclog.NewNullLogger(),
		CacheLocks:    true,
		MaxCached:     4096,
		DeadlockGrace: 2 * time.Second,
		StartTimeout:  30 * time.Second,

		WriteAttemptTimeout: time.Second,

		CheckpointInterval:  30 * time.Second,
		CheckpointPartBytes: 512 << 10,
	}
}

// Validate says which field is wrong, if any.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("dlm: Config.Client is nil"))
	}
	if c.Member == nil {
		errs = append(errs, errors.New("dlm: Config.Member is nil"))
	}
	if c.Prefix == "" || !strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("dlm: Config.Prefix %q must start with / and not end with /", c.Prefix))
	}
	if c.Clock == nil {
		errs = append(errs, errors.New("dlm: Config.Clock is nil"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("dlm: Config.Logger is nil"))
	}
	if c.MaxCached < 0 {
		errs = append(errs, fmt.Errorf("dlm: Config.MaxCached %d is negative", c.MaxCached))
	}
	if c.DeadlockGrace <= 0 {
		errs = append(errs, fmt.Errorf("dlm: Config.DeadlockGrace %v must be positive", c.DeadlockGrace))
	}
	if c.CheckpointInterval <= 0 {
		errs = append(errs, fmt.Errorf("dlm: Config.CheckpointInterval %v must be positive", c.CheckpointInterval))
	}
	if c.CheckpointPartBytes <= 0 {
		errs = append(errs, fmt.Errorf("dlm: Config.CheckpointPartBytes %d must be positive", c.CheckpointPartBytes))
	}
	if c.WriteAttemptTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dlm: Config.WriteAttemptTimeout %v must be positive", c.WriteAttemptTimeout))
	}
	if c.StartTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dlm: Config.StartTimeout %v must be positive", c.StartTimeout))
	}
	return errors.Join(errs...)
}
