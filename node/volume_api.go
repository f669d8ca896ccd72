package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
)

// Admin routes of the volume: its status and reads for operators; with
// debug (admin.debug, off by default) also the write loop of the fault
// tests (a write goes through the mirror, under the region locks of the
// lock manager, behind the self-fence guard).
func (v *volumeService) routes(a *cluster.AdminServer, debug bool) {
	a.Handle("GET /api/volume", http.HandlerFunc(v.handleStatus))
	a.Handle("GET /api/volume/read", http.HandlerFunc(v.handleRead))
	a.Handle("POST /api/volume/legs/fail", v.legChange("fail-leg", (*mirror.Volume).FailLeg))
	a.Handle("POST /api/volume/legs/remove", v.legChange("remove-leg", (*mirror.Volume).RemoveLeg))
	a.Handle("POST /api/volume/legs/add", http.HandlerFunc(v.handleAddLeg))
	a.Handle("POST /api/volume/legs/return", http.HandlerFunc(v.handleReturnLeg))
	a.Handle("POST /api/volume/resync", http.HandlerFunc(v.handleResync))
	a.Handle("POST /api/volume/scrub", http.HandlerFunc(v.handleScrub))
	a.Handle("GET /api/volume/scrub", http.HandlerFunc(v.handleScrubState))
	if debug {
		a.Handle("POST /api/volume/write", http.HandlerFunc(v.handleWrite))
	}
}

func (v *volumeService) handleStatus(w http.ResponseWriter, r *http.Request) {
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	st, err := vi.vol.Status(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	cluster.WriteJSON(w, http.StatusOK, st)
}

// LegRequest is the body of POST /api/volume/legs/fail and
// /api/volume/legs/remove: the leg by table index, address or UUID.
type LegRequest struct {
	Leg string `json:"leg"`
}

// legOf decodes a LegRequest body and finds its leg in the open volume's
// table: false once it has answered 400 (a bad body or an unknown leg) or
// 503 (no open volume).
func (v *volumeService) legOf(w http.ResponseWriter, r *http.Request) (*volumeIncarnation, int, bool) {
	var req LegRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Leg == "" {
		http.Error(w, `want a JSON body {"leg": INDEX|ADDRESS|UUID}`, http.StatusBadRequest)
		return nil, 0, false
	}
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return nil, 0, false
	}
	i, err := vi.vol.Table().Lookup(req.Leg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, 0, false
	}
	return vi, i, true
}

// legChange serves a leg change of the running volume: the leg table
// after it (200), 400 for an unknown leg, 409 when the volume refuses it
// (the last in-sync leg: mirror.ErrLastInSyncLeg), 503 without an open
// volume. The change is recorded in etcd and every node follows it.
func (v *volumeService) legChange(op string, change func(*mirror.Volume, context.Context, int) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vi, i, ok := v.legOf(w, r)
		if !ok {
			return
		}
		addr := vi.vol.Table().Legs[i].Addr
		ctx, cancel := context.WithTimeout(r.Context(), v.n.Config().RequestTimeout())
		defer cancel()
		if err := change(vi.vol, ctx, i); err != nil {
			code := http.StatusConflict
			if ctx.Err() != nil {
				code = http.StatusServiceUnavailable
			}
			http.Error(w, fmt.Sprintf("%s leg %d: %v", op, i, err), code)
			return
		}
		v.log.Warn("leg changed by an operator", "op", op, "leg", i, "addr", addr)
		cluster.WriteJSON(w, http.StatusOK, vi.vol.Table())
	})
}

// AddLegRequest is the body of POST /api/volume/legs/add: the new leg's
// address as every node opens it (a file missing there is created at the
// volume's leg size), and Force to take a device that holds data or
// another volume's superblock.
type AddLegRequest struct {
	Addr  string `json:"addr"`
	Force bool   `json:"force"`
}

// ResyncStarted is the answer of the routes that start a resync (202):
// the leg concerned (-1: none), the leg table, and whether this call
// started the resync or one was already running on this node. GET
// /api/volume follows its progress (resync_cursor of the leg).
type ResyncStarted struct {
	Leg     int             `json:"leg"`
	Table   mirror.LegTable `json:"table"`
	Started bool            `json:"started"`
}

// startResync runs the volume's resync in the background under the
// incarnation's life (one at a time on this node); false when one runs.
func (v *volumeService) startResync(vi *volumeIncarnation) bool {
	if !vi.resyncing.CompareAndSwap(false, true) {
		return false
	}
	vi.bg.Add(1)
	go func() {
		defer vi.bg.Done()
		defer vi.resyncing.Store(false)
		rep, err := vi.vol.Resync(vi.life)
		if err != nil {
			v.log.Warn("resync asked by an operator stopped; POST /api/volume/resync (shoalblk resync --config) resumes it", "error", err)
			return
		}
		v.log.Info("resync asked by an operator done", "legs", len(rep.Legs))
	}()
	return true
}

func (v *volumeService) answerResync(w http.ResponseWriter, vi *volumeIncarnation, leg int) {
	started := v.startResync(vi)
	cluster.WriteJSON(w, http.StatusAccepted, ResyncStarted{Leg: leg, Table: vi.vol.Table(), Started: started})
}

// handleAddLeg adds a leg to the running volume and starts copying to it
// (202); an add that was cut short after the leg joined the table
// resumes the copy. 409 when the volume refuses the device.
func (v *volumeService) handleAddLeg(w http.ResponseWriter, r *http.Request) {
	var req AddLegRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Addr == "" {
		http.Error(w, `want a JSON body {"addr": ADDRESS, "force": false}`, http.StatusBadRequest)
		return
	}
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	// Adding writes the new leg's metadata: bounded like a start.
	ctx, cancel := context.WithTimeout(r.Context(), v.n.Config().StartTimeout())
	defer cancel()
	if !strings.Contains(req.Addr, "://") {
		if _, err := os.Stat(req.Addr); errors.Is(err, fs.ErrNotExist) {
			size := (vi.vol.Geometry().LegSize() + blockdev.FileBlockSize - 1) / blockdev.FileBlockSize * blockdev.FileBlockSize
			if err := createLegFile(req.Addr, size); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
	}
	dev, err := vi.openLeg(ctx, req.Addr)
	if err != nil {
		http.Error(w, fmt.Sprintf("opening %s: %v", req.Addr, err), http.StatusBadRequest)
		return
	}
	if sb, err := mirror.ReadSuperblock(ctx, dev); err == nil && sb.Volume == vi.vol.UUID() {
		if i := vi.vol.Table().Find(sb.Self); i >= 0 {
			dev.Close()
			v.answerResync(w, vi, i)
			return
		}
	}
	i, err := vi.vol.AddLeg(ctx, dev, req.Addr, req.Force)
	if err != nil {
		dev.Close()
		http.Error(w, fmt.Sprintf("add-leg %s: %v", req.Addr, err), http.StatusConflict)
		return
	}
	v.log.Warn("leg added by an operator; copying to it", "leg", i, "addr", req.Addr)
	v.answerResync(w, vi, i)
}

// createLegFile creates a sparse leg file of size bytes, refusing to
// replace anything.
func createLegFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// handleReturnLeg brings a failed leg back (it gets every write from now
// on) and starts copying the regions it missed (202). 409 for a leg that
// is not failed.
func (v *volumeService) handleReturnLeg(w http.ResponseWriter, r *http.Request) {
	vi, i, ok := v.legOf(w, r)
	if !ok {
		return
	}
	t := vi.vol.Table()
	ctx, cancel := context.WithTimeout(r.Context(), v.n.Config().StartTimeout())
	defer cancel()
	switch t.Legs[i].State {
	case mirror.LegFailed:
		st, err := vi.vol.Status(ctx)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		var dev blockdev.Device
		if i >= len(st.Legs) || !st.Legs[i].Online {
			if dev, err = vi.openLeg(ctx, t.Legs[i].Addr); err != nil {
				http.Error(w, fmt.Sprintf("opening leg %d (%s): %v", i, t.Legs[i].Addr, err), http.StatusConflict)
				return
			}
		}
		if err := vi.vol.ReturnLeg(ctx, i, dev); err != nil {
			if dev != nil {
				dev.Close()
			}
			http.Error(w, fmt.Sprintf("return leg %d: %v", i, err), http.StatusConflict)
			return
		}
		v.log.Warn("failed leg returned by an operator; copying what it missed", "leg", i, "addr", t.Legs[i].Addr)
	case mirror.LegResyncing:
	default:
		http.Error(w, fmt.Sprintf("leg %d is %s, not failed", i, t.Legs[i].State), http.StatusConflict)
		return
	}
	v.answerResync(w, vi, i)
}

// handleResync starts (or resumes) copying to every resyncing leg (202).
func (v *volumeService) handleResync(w http.ResponseWriter, r *http.Request) {
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	v.answerResync(w, vi, -1)
}

// ScrubRequest is the body of POST /api/volume/scrub (mirror.ScrubOptions).
type ScrubRequest struct {
	Repair bool  `json:"repair"`
	From   int64 `json:"from"`
}

// ScrubState is the answer of GET /api/volume/scrub and POST
// /api/volume/scrub: the scrub running on this node, or the last one's
// outcome (Report, and Error when it stopped early: Report.Regions were
// scrubbed from From on). ID counts the scrubs this incarnation ran.
type ScrubState struct {
	ID       int                `json:"id"`
	Running  bool               `json:"running"`
	Repair   bool               `json:"repair"`
	From     int64              `json:"from"`
	Started  time.Time          `json:"started"`
	Finished time.Time          `json:"finished,omitzero"`
	Report   mirror.ScrubReport `json:"report"`
	Error    string             `json:"error,omitempty"`
}

// handleScrub starts a scrub of the running volume in the background
// (202 with its state); 409 while one runs on this node.
func (v *volumeService) handleScrub(w http.ResponseWriter, r *http.Request) {
	var req ScrubRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.From < 0 {
		http.Error(w, `want a JSON body {"repair": false, "from": REGION >= 0}`, http.StatusBadRequest)
		return
	}
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	vi.scrubMu.Lock()
	if vi.scrub.Running {
		st := vi.scrub
		vi.scrubMu.Unlock()
		cluster.WriteJSON(w, http.StatusConflict, st)
		return
	}
	vi.scrub = ScrubState{ID: vi.scrub.ID + 1, Running: true, Repair: req.Repair, From: req.From, Started: time.Now().UTC()}
	st := vi.scrub
	vi.bg.Add(1)
	vi.scrubMu.Unlock()
	go func() {
		defer vi.bg.Done()
		rep, err := vi.vol.Scrub(vi.life, mirror.ScrubOptions{Repair: req.Repair, From: req.From})
		vi.scrubMu.Lock()
		defer vi.scrubMu.Unlock()
		vi.scrub.Running, vi.scrub.Report, vi.scrub.Finished = false, rep, time.Now().UTC()
		if err != nil {
			vi.scrub.Error = err.Error()
		}
		v.log.Info("scrub asked by an operator ended", "regions", rep.Regions, "bad_copies", len(rep.Repairs), "repair", req.Repair, "error", vi.scrub.Error)
	}()
	cluster.WriteJSON(w, http.StatusAccepted, st)
}

func (v *volumeService) handleScrubState(w http.ResponseWriter, r *http.Request) {
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	vi.scrubMu.Lock()
	st := vi.scrub
	vi.scrubMu.Unlock()
	cluster.WriteJSON(w, http.StatusOK, st)
}

// maxIO bounds one read or write through the admin API.
const maxIO = 16 << 20

func (v *volumeService) handleRead(w http.ResponseWriter, r *http.Request) {
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	off, err1 := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	n, err2 := strconv.ParseInt(r.URL.Query().Get("length"), 10, 64)
	if err1 != nil || err2 != nil || off < 0 || n <= 0 || n > maxIO {
		http.Error(w, fmt.Sprintf("want offset >= 0 and 0 < length <= %d, in bytes", maxIO), http.StatusBadRequest)
		return
	}
	buf := make([]byte, n)
	if err := vi.vol.ReadAt(r.Context(), buf, off); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(buf)
}

// WriteRequest asks for Repeat writes of Length bytes of Pattern at
// Offset, IntervalMS apart (a writer that keeps writing, for fault tests).
type WriteRequest struct {
	Offset     int64 `json:"offset"`
	Length     int64 `json:"length"`
	Pattern    byte  `json:"pattern"`
	Repeat     int   `json:"repeat"`
	IntervalMS int   `json:"interval_ms"`
}

type WriteResult struct {
	Done  int    `json:"done"`
	Error string `json:"error,omitempty"`
	// Acked lists the completion times (unix nanoseconds) of the writes
	// the volume acknowledged, and Started when each of them was issued.
	Acked   []int64 `json:"acked"`
	Started []int64 `json:"started"`
}

func (v *volumeService) handleWrite(w http.ResponseWriter, r *http.Request) {
	var req WriteRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Repeat == 0 {
		req.Repeat = 1
	}
	if req.Offset < 0 || req.Length <= 0 || req.Length > maxIO || req.Repeat < 0 || req.Repeat > 100000 || req.IntervalMS < 0 || req.IntervalMS > 60000 {
		http.Error(w, fmt.Sprintf("want offset >= 0, 0 < length <= %d, 0 < repeat <= 100000, 0 <= interval_ms <= 60000", maxIO), http.StatusBadRequest)
		return
	}
	vi, err := v.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	buf := bytes.Repeat([]byte{req.Pattern}, int(req.Length))
	var res WriteResult
	ctx := r.Context()
	for i := 0; i < req.Repeat; i++ {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		started := time.Now().UnixNano()
		err := vi.vol.WriteAt(wctx, buf, req.Offset)
		cancel()
		if err != nil {
			res.Error = err.Error()
			break
		}
		res.Done++
		res.Acked = append(res.Acked, time.Now().UnixNano())
		res.Started = append(res.Started, started)
		if req.IntervalMS > 0 && i+1 < req.Repeat {
			select {
			case <-ctx.Done():
				res.Error = ctx.Err().Error()
				i = req.Repeat
			case <-time.After(time.Duration(req.IntervalMS) * time.Millisecond):
			}
		}
	}
	code := http.StatusOK
	if res.Error != "" {
		code = http.StatusConflict
	}
	cluster.WriteJSON(w, code, res)
}
