package main

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// benchVolume formats and opens a two-leg mirror of 256 MiB on file legs,
// closed at the end of the benchmark.
func benchVolume(b *testing.B) *mirror.Volume {
	ctx := context.Background()
	dir := b.TempDir()
	g, err := mirror.NewGeometry(4<<20, 4096, 8, 64)
	if err != nil {
		b.Fatal(err)
	}
	var devs []blockdev.Device
	for i := 0; i < 2; i++ {
		d, err := blockdev.OpenFile(filepath.Join(dir, string(rune('a'+i))), blockdev.OpenOptions{Create: true, CreateSize: g.LegSize()})
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, d)
	}
	if _, err := mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: 4 << 20, Slots: 8, DataIsZero: true}); err != nil {
		b.Fatal(err)
	}
	cfg := mirror.DefaultConfig(0)
	cfg.Legs = devs
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	return v
}

// BenchmarkMirrorSeqWrite profiles the mirror's sequential write path on file legs:
// go test -bench MirrorSeqWrite -cpuprofile cpu.out ./tools/benchvolume
func BenchmarkMirrorSeqWrite(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b)
	buf := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	for i := 0; i < b.N; i++ {
		off := int64(i%256) << 20
		if err := v.WriteAt(ctx, buf, off); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMirrorRandRead profiles the mirror's 4 KiB read path.
func BenchmarkMirrorRandRead(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b)
	raw := v.LegDevices()[0]
	buf := make([]byte, 4096)
	b.Run("mirror", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := v.ReadAt(ctx, buf, int64(i*7919%65536)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := raw.ReadAt(ctx, buf, int64(i*7919%65536)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMirrorRandWrite profiles the mirror's 4 KiB write path at queue
// depth 32 against one raw leg:
// go test -bench MirrorRandWrite -cpuprofile cpu.out ./tools/benchvolume
func BenchmarkMirrorRandWrite(b *testing.B) {
	ctx := context.Background()
	v := benchVolume(b)
	raw := v.LegDevices()[0]
	for _, c := range []struct {
		name string
		d    blockdev.Device
	}{{"mirror", v}, {"raw", raw}} {
		b.Run(c.name, func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				for pb.Next() {
					i := next.Add(1)
					if err := c.d.WriteAt(ctx, buf, (i*7919%65536)*4096); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
