package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ext4Peer is the file system the store is compared with.
type ext4Peer struct {
	root    string // where the benchmark's files go
	how     string // said in the table's heading
	img     string // the image file; "" for the machine's own file system
	cleanup func()
}

// mountExt4 makes an ext4 image of size bytes in dir and mounts it on a
// loop device; where that is not possible (no loop devices, not root) the
// peer is the machine's own file system under dir, on the same disk, and
// the heading says so.
func mountExt4(dir string, size int64) *ext4Peer {
	img, mnt := filepath.Join(dir, "ext4.img"), filepath.Join(dir, "ext4")
	fail := func(why string) *ext4Peer {
		os.Remove(img)
		root := filepath.Join(dir, "hostfs")
		os.MkdirAll(root, 0o755)
		var st unix.Statfs_t
		kind := "file system"
		if unix.Statfs(dir, &st) == nil && st.Type == unix.EXT4_SUPER_MAGIC {
			kind = "ext4"
		}
		return &ext4Peer{root: root, how: fmt.Sprintf("the machine's own %s on the same disk (no loop-mounted image: %s)", kind, why), cleanup: func() {}}
	}
	f, err := os.Create(img)
	if err != nil {
		return fail(err.Error())
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return fail(err.Error())
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		return fail(fmt.Sprintf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out))))
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fail(err.Error())
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		return fail(fmt.Sprintf("mount -o loop: %v: %s", err, strings.TrimSpace(string(out))))
	}
	root := filepath.Join(mnt, "bench")
	if err := os.MkdirAll(root, 0o755); err != nil {
		exec.Command("umount", mnt).Run()
		return fail(err.Error())
	}
	return &ext4Peer{
		root: root,
		img:  img,
		how:  fmt.Sprintf("ext4 on a %d MiB image on a loop device (mkfs.ext4 defaults), image file on the legs' disk", size>>20),
		cleanup: func() {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				// Busy (interrupted mid-row): detach it lazily.
				if out2, err2 := exec.Command("umount", "-l", mnt).CombinedOutput(); err2 != nil {
					fmt.Fprintf(os.Stderr, "benchstore: umount %s: %v: %s %s\n", mnt, err, out, out2)
					return
				}
			}
			os.Remove(img)
		},
	}
}

// dropCache evicts a file's pages, so the next read comes from the disk as
// the store's does.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
