package blockdev_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shoal-ha/shoal/blockdev"
)

// TestDirectOnDisk: on ext4 and xfs, which support it, O_DIRECT is used.
func TestDirectOnDisk(t *testing.T) {
	d, err := blockdev.OpenFile(t.TempDir()+"/leg.img", blockdev.OpenOptions{Create: true, CreateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var st unix.Statfs_t
	unix.Statfs(d.Path(), &st)
	if st.Type != unix.EXT4_SUPER_MAGIC && st.Type != unix.XFS_SUPER_MAGIC {
		t.Skipf("file system type %#x: O_DIRECT support unknown", st.Type)
	}
	if !d.Direct() {
		t.Fatalf("ext4/xfs file opened without O_DIRECT")
	}
}
