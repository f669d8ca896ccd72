package dlm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Checkpoints in etcd. A checkpoint of up to Config.CheckpointPartBytes is
// the value of the checkpoint key itself (gzip). A larger one, a table of
// tens of thousands of locks and value blocks, would pass etcd's request
// limit (--max-request-bytes, 1.5 MiB by default): the write would fail,
// and a node joining after a compaction would find no checkpoint to
// start from. It is written in parts instead, each its own put under
// P/dlm/parts/REV/NAME/, and then the checkpoint key gets a manifest
// naming them, in one transaction that is conditional on the checkpoint
// seen and on every part still being there, and that deletes the parts
// of every older checkpoint. Parts of a checkpoint whose manifest was
// never written (its writer lost a race, or died) are older than the next
// checkpoint that is, and go with it.

// maxCheckpointParts bounds the parts of one checkpoint: the manifest's
// transaction compares each of them, and etcd allows 128 operations in a
// transaction (--max-txn-ops). With the default part size it allows
// checkpoints of 50 MiB, about 1.3 million locks.
const maxCheckpointParts = 100

// cpManifest is the checkpoint key's value for a checkpoint in parts.
type cpManifest struct {
	// Rev is the revision the checkpoint is at (REV of its parts).
	Rev int64 `json:"rev"`
	// Writer is the member name of the node that wrote it (NAME).
	Writer string `json:"writer"`
	// Parts is how many parts there are, numbered from 0.
	Parts int `json:"parts"`
	// Size is the checkpoint's length in bytes, SHA256 its hash (hex).
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// errCheckpointReplaced says the parts a manifest names are gone: a newer
// checkpoint replaced it between the reads. Reading again is safe.
var errCheckpointReplaced = errors.New("dlm: the checkpoint was replaced while it was read")

func cpRev(rev int64) string { return fmt.Sprintf("%016x", rev) }

// putCheckpoint writes data, the checkpoint at revision rev, as writer's,
// if the checkpoint key's mod revision is still seen, in one value or in
// parts of at most partSize bytes (see above). It returns whether the
// checkpoint was stored and how many etcd writes it made. An error leaves
// no checkpoint half written: the key names complete parts or none.
func putCheckpoint(ctx context.Context, cli *clientv3.Client, k keyspace, seen, rev int64, writer string, data []byte, partSize int) (stored bool, writes int, err error) {
	older := clientv3.OpDelete(k.s.DLMCheckpointParts(), clientv3.WithRange(k.s.DLMCheckpointPartsBefore(cpRev(rev))))
	cond := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k.checkpoint()), "=", seen)}
	if len(data) <= partSize {
		resp, err := cli.Txn(ctx).If(cond...).Then(clientv3.OpPut(k.checkpoint(), string(data)), older).Commit()
		if err != nil {
			return false, 1, err
		}
		return resp.Succeeded, 1, nil
	}
	if writer == "" || strings.Contains(writer, "/") {
		return false, 0, fmt.Errorf("dlm: checkpoint writer %q is not a member name", writer)
	}
	n := (len(data) + partSize - 1) / partSize
	if n > maxCheckpointParts {
		return false, 0, fmt.Errorf("dlm: a checkpoint of %d bytes needs %d parts of %d, more than %d", len(data), n, partSize, maxCheckpointParts)
	}
	for i := range n {
		key := k.s.DLMCheckpointPart(cpRev(rev), writer, fmt.Sprintf("%04d", i))
		_, err := cli.Put(ctx, key, string(data[i*partSize:min(len(data), (i+1)*partSize)]))
		writes++
		if err != nil {
			return false, writes, fmt.Errorf("dlm: writing part %d of %d of a checkpoint: %w", i+1, n, err)
		}
		cond = append(cond, clientv3.Compare(clientv3.Version(key), ">", 0))
	}
	sum := sha256.Sum256(data)
	m := cpManifest{Rev: rev, Writer: writer, Parts: n, Size: len(data), SHA256: hex.EncodeToString(sum[:])}
	resp, err := cli.Txn(ctx).If(cond...).Then(clientv3.OpPut(k.checkpoint(), mustJSON(m)), older).Commit()
	writes++
	if err != nil {
		// Maybe written: the parts stay (a later checkpoint removes them).
		return false, writes, err
	}
	if !resp.Succeeded {
		// Nobody names these parts, and nobody will.
		_, err = cli.Delete(ctx, k.s.DLMCheckpointGen(cpRev(rev), writer), clientv3.WithPrefix())
		writes++
		if err != nil {
			return false, writes, fmt.Errorf("dlm: removing the parts of a checkpoint not written: %w", err)
		}
	}
	return resp.Succeeded, writes, nil
}

// checkpointReplica restores the replica for prefix from value, the
// checkpoint key's value as read at revision rev: the checkpoint itself,
// or a manifest whose parts it reads (as of rev, or as of now when rev was
// compacted meanwhile; a part's value never changes). It fails with
// errCheckpointReplaced when the parts are gone, with another error when
// the checkpoint is damaged.
func checkpointReplica(ctx context.Context, cli *clientv3.Client, prefix string, value []byte, rev int64) (*Replica, error) {
	if len(value) == 0 || value[0] != '{' {
		return RestoreReplica(prefix, value)
	}
	var m cpManifest
	if err := json.Unmarshal(value, &m); err != nil {
		return nil, fmt.Errorf("dlm: checkpoint manifest: %w", err)
	}
	if m.Parts < 1 || m.Parts > maxCheckpointParts || m.Size < m.Parts || m.Writer == "" || strings.Contains(m.Writer, "/") || m.Rev < 1 {
		return nil, fmt.Errorf("dlm: checkpoint manifest %s is not valid", value)
	}
	k := newKeyspace(prefix)
	gen := k.s.DLMCheckpointGen(cpRev(m.Rev), m.Writer)
	resp, err := cli.Get(ctx, gen, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if errors.Is(err, rpctypes.ErrCompacted) {
		resp, err = cli.Get(ctx, gen, clientv3.WithPrefix())
	}
	if err != nil {
		return nil, fmt.Errorf("dlm: reading the parts of the checkpoint at revision %d: %w", m.Rev, err)
	}
	if len(resp.Kvs) != m.Parts {
		return nil, fmt.Errorf("%w: %d of its %d parts are left", errCheckpointReplaced, len(resp.Kvs), m.Parts)
	}
	var data bytes.Buffer
	for i, kv := range resp.Kvs { // sorted by key, so by part number
		if want := k.s.DLMCheckpointPart(cpRev(m.Rev), m.Writer, fmt.Sprintf("%04d", i)); string(kv.Key) != want {
			return nil, fmt.Errorf("dlm: checkpoint at revision %d: part %s where %s belongs", m.Rev, kv.Key, want)
		}
		data.Write(kv.Value)
	}
	if sum := sha256.Sum256(data.Bytes()); data.Len() != m.Size || hex.EncodeToString(sum[:]) != m.SHA256 {
		return nil, fmt.Errorf("dlm: checkpoint at revision %d: its parts hold %d bytes that do not match the manifest's %d and hash", m.Rev, data.Len(), m.Size)
	}
	return RestoreReplica(prefix, data.Bytes())
}
