package mirror

import (
	"encoding/binary"
	"hash/crc32"
)

// Every data block has a CRC-32C in its region's checksum area on each leg.
// A write marks its regions, then updates data and checksums: the
// write-intent bit covers the time the two disagree, so after a crash
// recovery recomputes the checksums of every region the crashed node had
// marked. A node that holds a region's checksum lock (RegionHolder) keeps
// the area in memory and writes it back later (csumcache.go), still
// before the mark goes; otherwise each write reads and rewrites the area.

func putCsum(area []byte, i int64, c uint32) {
	binary.LittleEndian.PutUint32(area[i*csumSize:], c)
}

func getCsum(area []byte, i int64) uint32 {
	return binary.LittleEndian.Uint32(area[i*csumSize:])
}

func blockCsum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
