package store

import (
	"sync"
)

// statMemo remembers, for each name quickStat answered from this node's
// lock caches alone, the cached block images the walk read and the answer
// it gave. A cached image is never changed once cached (a change makes a
// new image, and a lock given up or called back drops its cache), so while
// each of those images is still the one its lock's cache holds, the walk
// would read the same bytes and give the same answer: the memo gives it
// without checking the images' checksums and decoding them again (a web
// node stats the file of every GET). The memo holds the images it names,
// so the memory of a remembered image is never reused for another one.
type statMemo struct {
	mu    sync.RWMutex
	names map[string]*statAnswer
}

// statMemoMax bounds the names remembered; a full memo starts afresh.
const statMemoMax = 4096

type statAnswer struct {
	path []cachedImage
	fi   *fileInfo
}

// cachedImage is block blk of inode ino as the cache of ino's lock held
// it (img is the image itself: identity, not contents, is compared).
type cachedImage struct {
	ino, blk uint64
	img      []byte
}

// lookup gives the remembered answer for name when every image of its walk
// is still the one its lock's cache holds; nil otherwise.
func (m *statMemo) lookup(s *Store, name string) *fileInfo {
	m.mu.RLock()
	a := m.names[name]
	m.mu.RUnlock()
	if a == nil {
		return nil
	}
	for _, c := range a.path {
		b := s.cachedBlock(c.ino, c.blk, false)
		if len(b) == 0 || &b[0] != &c.img[0] {
			return nil
		}
	}
	return a.fi
}

func (m *statMemo) remember(name string, path []cachedImage, fi *fileInfo) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names == nil || len(m.names) >= statMemoMax {
		m.names = make(map[string]*statAnswer)
	}
	m.names[name] = &statAnswer{path: path, fi: fi}
}

// cachedBlock is block blk of inode ino from the cache of ino's lock when
// this node holds it in a mode that covers Shared (glock.cachedBlock); nil
// otherwise.
func (s *Store) cachedBlock(ino, blk uint64, wait bool) []byte {
	s.gmu.Lock()
	g := s.glocks[glockKey{classInode, ino}]
	s.gmu.Unlock()
	if g == nil {
		return nil
	}
	return g.cachedBlock(blk, wait)
}

// walkBlock is block blk of inode ino from the cache of ino's lock
// (cachedBlock, waiting for a local exclusive user when wait), noted in
// path; nil when this node does not hold it.
func (s *Store) walkBlock(ino, blk uint64, wait bool, path *[]cachedImage) []byte {
	b := s.cachedBlock(ino, blk, wait)
	if len(b) > 0 {
		*path = append(*path, cachedImage{ino: ino, blk: blk, img: b})
	}
	return b
}
