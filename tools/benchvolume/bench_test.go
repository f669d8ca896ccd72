package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// BenchmarkMirrorSeqWrite profiles the mirror's sequential write path on file legs:
// go test -bench MirrorSeqWrite -cpuprofile cpu.out ./tools/benchvolume
func BenchmarkMirrorSeqWrite(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	g, _ := mirror.NewGeometry(4<<20, 4096, 8, 64)
	var devs []blockdev.Device
	for i := 0; i < 2; i++ {
		d, err := blockdev.OpenFile(filepath.Join(dir, string(rune('a'+i))), blockdev.OpenOptions{Create: true, CreateSize: g.LegSize()})
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, d)
	}
	mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: 4 << 20, Slots: 8, DataIsZero: true})
	cfg := mirror.DefaultConfig(0)
	cfg.Legs = devs
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
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
	dir := b.TempDir()
	g, _ := mirror.NewGeometry(4<<20, 4096, 8, 64)
	var devs []blockdev.Device
	for i := 0; i < 2; i++ {
		d, err := blockdev.OpenFile(filepath.Join(dir, string(rune('a'+i))), blockdev.OpenOptions{Create: true, CreateSize: g.LegSize()})
		if err != nil {
			b.Fatal(err)
		}
		devs = append(devs, d)
	}
	mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: 4 << 20, Slots: 8, DataIsZero: true})
	cfg := mirror.DefaultConfig(0)
	cfg.Legs = devs
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
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
			if err := devs[0].ReadAt(ctx, buf, int64(i*7919%65536)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}
