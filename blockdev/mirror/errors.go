package mirror

import "errors"

// Sentinel errors of the mirror. Test with errors.Is; each says whether a
// retry can help.
var (
	// ErrNoValidCopy: ReadVerified found no in-sync leg whose copy the
	// caller accepts. Not retriable: every leg holds damaged contents.
	ErrNoValidCopy = errors.New("mirror: no leg holds a valid copy")
	// ErrBadSuperblock: a leg's superblock is missing, corrupt or of an
	// unknown version. Not retriable; the leg needs format or add-leg.
	ErrBadSuperblock = errors.New("mirror: bad superblock")
	// ErrBadBitmap: a write-intent bitmap block failed its checksum. The
	// volume treats every region the block covers as dirty.
	ErrBadBitmap = errors.New("mirror: bad bitmap block")
	// ErrForeignLeg: a leg belongs to another volume. Not retriable.
	ErrForeignLeg = errors.New("mirror: leg belongs to another volume")
	// ErrStaleLeg: a leg's superblock generation is older than the
	// volume's and the volume no longer counts it as in sync, so it must
	// not serve data. Bring it back with a resync.
	ErrStaleLeg = errors.New("mirror: stale leg")
	// ErrMissingLeg: a leg the volume counts as in sync was not given.
	// Retry with every leg, or allow missing legs (they are then failed).
	ErrMissingLeg = errors.New("mirror: in-sync leg missing")
	// ErrLastInSyncLeg: the operation would leave no in-sync leg. Never
	// retried by the mirror; the operator must bring another leg in sync.
	ErrLastInSyncLeg = errors.New("mirror: refusing to drop the last in-sync leg")
	// ErrNoInSyncLeg: every leg failed; the volume cannot serve I/O. A
	// failed write leaves the range's contents unknown.
	ErrNoInSyncLeg = errors.New("mirror: no in-sync leg left")
	// ErrNoSlot: the volume was opened without a node slot (as a tool) and
	// cannot take writes. Not retriable on this handle.
	ErrNoSlot = errors.New("mirror: volume opened without a node slot")
	// ErrConflict: the leg table changed under a compare-and-swap. The
	// mirror reloads and retries by itself; callers see it only when
	// retries ran out, and may retry the whole operation.
	ErrConflict = errors.New("mirror: leg table changed concurrently")
	// ErrBadGeometry: format parameters or leg sizes do not fit.
	ErrBadGeometry = errors.New("mirror: bad geometry")
	// ErrNoSuchLeg: the named leg is not in the volume's leg table.
	ErrNoSuchLeg = errors.New("mirror: no such leg")
	// ErrReadOnly: the volume was opened read-only (Config.ReadOnly) and
	// refuses anything that would write to a leg or the leg state store.
	// Not retriable on this handle; open it writable to change it.
	ErrReadOnly = errors.New("mirror: volume opened read-only")
	// ErrLegNotBlank: format or add-leg was given a leg that holds a
	// superblock or data. Not retriable; the caller may overwrite it on
	// purpose (FormatOptions.Force, AddLeg's force).
	ErrLegNotBlank = errors.New("mirror: leg is not blank")
	// ErrVolumeOpen: format or add-leg was given a leg of a volume that a
	// node has open (an open-volume marker in its slot's bitmap).
	// Overwriting it would pull the volume from under that node. Retry
	// once the nodes are stopped or their slots recovered; or overwrite
	// on purpose (FormatOptions.ForceWhileOpen).
	ErrVolumeOpen = errors.New("mirror: leg belongs to a volume a node has open")
	// ErrNotHeld: a region hold was used or released after its release
	// (a bug in the caller). Not retriable.
	ErrNotHeld = errors.New("mirror: region hold not held")
	// ErrWouldBlock: a RegionHolder's answer to a request with
	// RegionRequest.Try that cannot be granted at once. Nothing is held
	// or left queued; the caller may ask again without Try.
	ErrWouldBlock = errors.New("mirror: region hold would block")
	// ErrClosed: the volume was closed.
	ErrClosed = errors.New("mirror: volume closed")
)
