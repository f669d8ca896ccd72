package blockdev

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
)

// Mem is an in-memory Device for tests. It remembers which writes were not
// yet flushed, so CrashClone can model a power loss that drops them or
// keeps a random subset of their blocks (a torn multi-block write). Its
// embedded Faults inject I/O errors and latency.
type Mem struct {
	Faults
	mu        sync.RWMutex
	data      []byte // what reads see
	durable   []byte // what survives a crash
	pending   []memWrite
	blockSize int
	closed    bool
}

type memWrite struct {
	off  int64
	data []byte
}

// NewMem returns a zeroed device of size bytes. size must be a positive
// multiple of blockSize.
func NewMem(size int64, blockSize int) (*Mem, error) {
	if blockSize <= 0 || blockSize&(blockSize-1) != 0 {
		return nil, fmt.Errorf("blockdev: block size %d is not a power of two", blockSize)
	}
	if size <= 0 || size%int64(blockSize) != 0 {
		return nil, fmt.Errorf("blockdev: size %d is not a positive multiple of block size %d", size, blockSize)
	}
	return &Mem{data: make([]byte, size), durable: make([]byte, size), blockSize: blockSize}, nil
}

// Size is the device size in bytes.
func (m *Mem) Size() int64 { return int64(len(m.data)) }

// BlockSize is the block size.
func (m *Mem) BlockSize() int { return m.blockSize }

// ReadAt reads len(p) bytes at off.
func (m *Mem) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := CheckRange(m, len(p), off); err != nil {
		return err
	}
	if err := m.before(ctx, opRead, off, int64(len(p))); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	copy(p, m.data[off:])
	return nil
}

// WriteAt writes p at off; the write is lost by a crash until Flush.
func (m *Mem) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := CheckRange(m, len(p), off); err != nil {
		return err
	}
	if err := m.before(ctx, opWrite, off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	copy(m.data[off:], p)
	m.pending = append(m.pending, memWrite{off, append([]byte(nil), p...)})
	return nil
}

// Flush makes every completed write durable.
func (m *Mem) Flush(ctx context.Context) error {
	if err := m.before(ctx, opFlush, 0, 0); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, w := range m.pending {
		copy(m.durable[w.off:], w.data)
	}
	m.pending = m.pending[:0]
	return nil
}

// Close marks the device closed.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Unflushed reports how many writes a crash could lose right now.
func (m *Mem) Unflushed() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.pending)
}

// CrashOptions says what a crash keeps of the unflushed writes.
type CrashOptions struct {
	// KeepProbability is the chance that each block of each unflushed write
	// survives, independently: 0 drops every unflushed write, 1 keeps
	// them all, anything between tears multi-block writes.
	KeepProbability float64
	// Seed makes the choice reproducible.
	Seed uint64
}

// CrashClone returns a new device holding what a power loss would leave:
// the durable contents plus, per CrashOptions, some blocks of the unflushed
// writes. m itself is unchanged. Faults are not copied.
func (m *Mem) CrashClone(opts CrashOptions) *Mem {
	m.mu.RLock()
	defer m.mu.RUnlock()
	rng := rand.New(rand.NewPCG(opts.Seed, 0x5eed))
	c := &Mem{data: append([]byte(nil), m.durable...), blockSize: m.blockSize}
	bs := int64(m.blockSize)
	for _, w := range m.pending {
		for b := int64(0); b < int64(len(w.data)); b += bs {
			if opts.KeepProbability >= 1 || (opts.KeepProbability > 0 && rng.Float64() < opts.KeepProbability) {
				copy(c.data[w.off+b:], w.data[b:b+bs])
			}
		}
	}
	c.durable = append([]byte(nil), c.data...)
	return c
}

// Poke overwrites bytes directly, bypassing faults and crash tracking: it
// is how tests corrupt a leg behind the volume's back.
func (m *Mem) Poke(off int64, p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	copy(m.durable[off:], p)
}

// Peek returns a copy of n bytes at off, bypassing faults.
func (m *Mem) Peek(off, n int64) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data[off:off+n]...)
}
