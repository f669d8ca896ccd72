package cluster

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/internal/adminauth"
)

// LeaveStep is one step of a node leaving the cluster for good, as GET
// /api/leave reports it.
type LeaveStep struct {
	At   time.Time `json:"at"`
	Step string    `json:"step"`
}

// LeaveProgress is the answer of GET /api/leave.
type LeaveProgress struct {
	Node    string      `json:"node"`
	Leaving bool        `json:"leaving"`
	Steps   []LeaveStep `json:"steps"`
}

// leaveLog records the steps of a leave, for the log and GET /api/leave.
type leaveLog struct {
	mu     sync.Mutex
	steps  []LeaveStep
	active bool
	left   bool // the etcd member is removed: Close deletes the member's files
}

func (l *leaveLog) step(n *Node, s string) {
	n.log.Info("leave: " + s)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active = true
	l.steps = append(l.steps, LeaveStep{At: time.Now().UTC(), Step: s})
}

func (l *leaveLog) snapshot(node string) LeaveProgress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LeaveProgress{Node: node, Leaving: l.active, Steps: append([]LeaveStep{}, l.steps...)}
}

func (a *AdminServer) leaveProgress(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, a.n.leave.snapshot(a.n.cfg.NodeName))
}

// memberFiles are the files of a data directory that belong to the member
// and go when it leaves for good; the etcd member's data goes first, in
// removeMember. A CA directory (tls.auto_dir) is the cluster's and stays.
var memberFiles = []string{"certs", identityFile, ".lock", adminauth.TokenFile}

// deleteMemberFiles removes what is left of a member that left, after the
// data directory is unlocked, and the directory itself if nothing else is
// in it.
func (n *Node) deleteMemberFiles() error {
	var errs []error
	for _, f := range memberFiles {
		if err := os.RemoveAll(filepath.Join(n.cfg.DataDir, f)); err != nil {
			errs = append(errs, err)
		}
	}
	if ents, err := os.ReadDir(n.cfg.DataDir); err == nil && len(ents) == 0 {
		if err := os.Remove(n.cfg.DataDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		n.log.Error("leave: deleting the member's files failed", "error", err)
		return err
	}
	n.log.Info("leave: deleted the member's files", "dir", n.cfg.DataDir)
	return nil
}
