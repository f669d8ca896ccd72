// Package blockdev defines Shoal's block device: a small Device interface
// (read and write at a block-aligned offset, flush, size, block size,
// close) with optional abilities as separate interfaces detected by type
// assertion (Trimmer, Reservations), and the backends that need no network:
//
//   - File: a regular file or block-device path, O_DIRECT where the file
//     system allows it (buffered I/O with a log line where it does not),
//     Flush is fdatasync. Registered as the "file" scheme, and used for any
//     address without a scheme.
//   - Mem: an in-memory device for tests that can crash (CrashClone drops
//     unflushed writes or keeps a random subset of their blocks) and, like
//     any device wrapped in Faulty, inject read/write errors, a dead path
//     and latency on demand.
//
// The RAID-1 volume built over several devices lives in blockdev/mirror.
// blockdev never imports the lock manager, the daemon, the store or the web
// tier; a test asserts it.
//
// Usage:
//
//	dev, err := blockdev.Open(ctx, "/var/lib/shoal/leg0.img", blockdev.OpenOptions{Logger: log})
//	if err != nil {
//		return err
//	}
//	defer dev.Close()
//	buf := make([]byte, dev.BlockSize())
//	if err := dev.ReadAt(ctx, buf, 0); err != nil {
//		return err // errors.Is(err, blockdev.ErrIO) for media errors
//	}
//	if t, ok := dev.(blockdev.Trimmer); ok {
//		_ = t.Trim(ctx, 0, int64(dev.BlockSize()))
//	}
package blockdev
