package mirror

import (
	"encoding/binary"
	"hash/crc32"
)

// Every data block has a CRC-32C in its region's checksum area on each leg.
// A write updates data and checksums under the region's exclusive lock; the
// write-intent bit covers the moment in between, so after a crash recovery
// recomputes the checksums of every region the crashed node had marked.

func putCsum(area []byte, i int64, c uint32) {
	binary.LittleEndian.PutUint32(area[i*csumSize:], c)
}

func getCsum(area []byte, i int64) uint32 {
	return binary.LittleEndian.Uint32(area[i*csumSize:])
}

func blockCsum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
