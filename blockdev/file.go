package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// openDirect opens with O_DIRECT; tests replace it to play a file system
// that refuses the flag.
var openDirect = func(path string, flag int) (*os.File, error) {
	return os.OpenFile(path, flag|unix.O_DIRECT, 0)
}

// FileBlockSize is the block size a file backend reports for regular files.
// 4096 satisfies O_DIRECT alignment on every common Linux file system.
const FileBlockSize = 4096

// directAlign is the memory alignment O_DIRECT buffers get.
const directAlign = 4096

func init() {
	RegisterScheme("file", func(ctx context.Context, addr string, opts OpenOptions) (Device, error) {
		return OpenFile(trimFileScheme(addr), opts)
	})
}

func trimFileScheme(addr string) string {
	const p = "file://"
	if len(addr) > len(p) && addr[:len(p)] == p {
		return addr[len(p):]
	}
	return addr
}

// File is a Device backed by a regular file or a block-device path. It uses
// O_DIRECT when the file system allows it and buffered I/O otherwise; Flush
// is fdatasync in both cases.
type File struct {
	path      string
	f         *os.File
	size      int64
	blockSize int
	direct    bool
	readOnly  bool
	closed    atomic.Bool
	mu        sync.RWMutex // held shared by I/O, exclusively by Close
	bounce    sync.Pool
}

// OpenFile opens path as a device. With opts.Create a missing file is
// created with opts.CreateSize bytes; an existing one is never resized.
func OpenFile(path string, opts OpenOptions) (*File, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if path == "" {
		return nil, fmt.Errorf("blockdev: empty file path")
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if !opts.Create {
			return nil, fmt.Errorf("blockdev: %s does not exist: %w", path, err)
		}
		if opts.CreateSize <= 0 || opts.CreateSize%FileBlockSize != 0 {
			return nil, fmt.Errorf("blockdev: cannot create %s: size %d is not a positive multiple of %d", path, opts.CreateSize, FileBlockSize)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("blockdev: create %s: %w", path, err)
		}
		if err := f.Truncate(opts.CreateSize); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("blockdev: size %s: %w", path, err)
		}
		f.Close()
	}
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	direct := true
	f, err := openDirect(path, flag)
	if err != nil && errors.Is(err, unix.EINVAL) {
		direct = false
		f, err = os.OpenFile(path, flag, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	d := &File{path: path, f: f, blockSize: FileBlockSize, direct: direct, readOnly: opts.ReadOnly}
	d.bounce.New = func() any { return new([]byte) }
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: stat %s: %w", path, err)
	}
	switch {
	case fi.Mode().IsRegular():
		d.size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0:
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("blockdev: size of %s: %w", path, err)
		}
		d.size = end
		if bs, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && bs > 0 && bs <= FileBlockSize {
			// Keep 4096 when the device allows it: it is a multiple
			// of every smaller logical block size.
			if FileBlockSize%bs != 0 {
				d.blockSize = bs
			}
		}
	default:
		f.Close()
		return nil, fmt.Errorf("blockdev: %s is neither a regular file nor a block device", path)
	}
	d.size -= d.size % int64(d.blockSize)
	if d.size == 0 {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s is smaller than one block (%d bytes)", path, d.blockSize)
	}
	if direct {
		// Some file systems accept O_DIRECT at open and refuse the I/O.
		probe := alignedBuf(d.blockSize)
		if _, err := f.ReadAt(probe, 0); err != nil && !errors.Is(err, io.EOF) {
			f.Close()
			d.direct = false
			if f, err = os.OpenFile(path, flag, 0); err != nil {
				return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
			}
			d.f = f
		}
	}
	if !d.direct {
		log.Info("O_DIRECT not available, using buffered I/O", "path", path)
	}
	return d, nil
}

// Direct reports whether the device bypasses the page cache.
func (d *File) Direct() bool { return d.direct }

// Path is the file or device path.
func (d *File) Path() string { return d.path }

// Size is the device's size in bytes.
func (d *File) Size() int64 { return d.size }

// BlockSize is the device's logical block size.
func (d *File) BlockSize() int { return d.blockSize }

func (d *File) check(p []byte, off int64) error {
	if d.closed.Load() {
		return ErrClosed
	}
	return CheckRange(d, len(p), off)
}

// ReadAt reads len(p) bytes at off.
func (d *File) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.check(p, off); err != nil {
		return err
	}
	buf, put := d.ioBuf(p)
	defer put()
	if _, err := d.f.ReadAt(buf, off); err != nil {
		return fmt.Errorf("%w: read %s at %d: %v", ErrIO, d.path, off, err)
	}
	if &buf[0] != &p[0] {
		copy(p, buf)
	}
	return nil
}

// WriteAt writes p at off.
func (d *File) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.check(p, off); err != nil {
		return err
	}
	if d.readOnly {
		return fmt.Errorf("%w: write to %s", ErrReadOnly, d.path)
	}
	buf, put := d.ioBuf(p)
	defer put()
	if &buf[0] != &p[0] {
		copy(buf, p)
	}
	if _, err := d.f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("%w: write %s at %d: %v", ErrIO, d.path, off, err)
	}
	return nil
}

// Flush makes completed writes durable (fdatasync).
func (d *File) Flush(ctx context.Context) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return ErrClosed
	}
	if d.readOnly {
		return nil
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return fmt.Errorf("%w: fdatasync %s: %v", ErrIO, d.path, err)
	}
	return nil
}

// Trim punches a hole into a regular file; block devices answer
// ErrNotSupported.
func (d *File) Trim(ctx context.Context, off, length int64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return ErrClosed
	}
	if off < 0 || length < 0 || off+length > d.size {
		return ErrOutOfRange
	}
	if off%int64(d.blockSize) != 0 || length%int64(d.blockSize) != 0 {
		return ErrUnaligned
	}
	err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV) {
		return ErrNotSupported
	}
	if err != nil {
		return fmt.Errorf("%w: trim %s: %v", ErrIO, d.path, err)
	}
	return nil
}

// Close releases the file. Later calls fail with ErrClosed.
func (d *File) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.f.Close()
}

// ioBuf returns p itself when it can go to the kernel as it is, or an
// aligned bounce buffer of the same length.
func (d *File) ioBuf(p []byte) ([]byte, func()) {
	if !d.direct || uintptr(unsafe.Pointer(&p[0]))%directAlign == 0 {
		return p, func() {}
	}
	bp := d.bounce.Get().(*[]byte)
	if cap(*bp) < len(p) {
		*bp = alignedBuf(len(p))
	}
	buf := (*bp)[:len(p)]
	return buf, func() { d.bounce.Put(bp) }
}

// alignedBuf returns n bytes whose first byte is directAlign-aligned.
func alignedBuf(n int) []byte {
	raw := make([]byte, n+directAlign)
	shift := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign)
	if shift != 0 {
		shift = directAlign - shift
	}
	return raw[shift : shift+n : shift+n]
}

// CheckRange validates an access of n bytes at off against d's size and
// block size, returning ErrOutOfRange or ErrUnaligned.
func CheckRange(d interface {
	Size() int64
	BlockSize() int
}, n int, off int64) error {
	bs := int64(d.BlockSize())
	if n <= 0 || off < 0 || off+int64(n) > d.Size() || off+int64(n) < off {
		return fmt.Errorf("%w: %d bytes at %d (device size %d)", ErrOutOfRange, n, off, d.Size())
	}
	if off%bs != 0 || int64(n)%bs != 0 {
		return fmt.Errorf("%w: %d bytes at %d (block size %d)", ErrUnaligned, n, off, bs)
	}
	return nil
}
