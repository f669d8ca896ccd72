package store

import "errors"

// Errors of the store. Path errors come wrapped in *fs.PathError; test them
// with errors.Is.
var (
	// ErrNoSpace: no allocation group has the blocks the operation needs.
	// Nothing of the operation was committed and the tree is as before;
	// retrying is safe once space was freed.
	ErrNoSpace = errors.New("store: no space left")
	// ErrCorrupt: a block failed its checksum or its self-description, or
	// holds values that cannot be. The error names the block, and the
	// inode and path where known. Retrying does not help; the mirror
	// repairs a block that is good on another leg before this is returned.
	ErrCorrupt = errors.New("store: corrupt block")
	// ErrJournalFull: the transaction (or the records not yet acknowledged
	// with Tx.Ack) does not fit in the slot's journal. Nothing was
	// committed; retry with a smaller transaction or after acknowledging
	// records.
	ErrJournalFull = errors.New("store: journal full")
	// ErrConflict: Update could not get its locks without risking a
	// deadlock after several attempts. Nothing was committed; retrying is
	// safe.
	ErrConflict = errors.New("store: lock conflict, nothing committed")
	// ErrSlotBusy: another live node has the slot open. Not retriable with
	// the same slot while that node lives.
	ErrSlotBusy = errors.New("store: slot in use by a live node")
	// ErrClosed: the store (or file) was closed. Not retriable on this
	// handle.
	ErrClosed = errors.New("store: closed")
	// ErrNotStore: the device holds no store (or one of another layout
	// version). Not retriable.
	ErrNotStore = errors.New("store: device holds no store")
	// ErrWouldBlock is returned by a Locker for a Try request that would
	// have to wait.
	ErrWouldBlock = errors.New("store: lock would block")
	// ErrFenced is returned by Lock.Use when the node may no longer use
	// its locks; the write that asked is not made. Never retry on this
	// node incarnation.
	ErrFenced = errors.New("store: node fenced, lock no longer usable")
	// ErrUnwritten: transactions this node committed could not be
	// written in place (the volume failed the writes, or at Close did not
	// make them durable within Config.CloseTimeout). Their journal
	// keeps them and this node reads them from memory; its checkpoints,
	// and so the hand-over of the locks guarding them, wait until they are
	// written. Retrying later is safe. If the volume keeps failing, the
	// node must stop: its next Open of the slot, or its recovery, replays
	// them.
	ErrUnwritten = errors.New("store: committed blocks not written in place")
	// ErrRecovering: the transaction (UpdateRecoveryBound) needed a lock
	// a dead node holds until its recovery ends, for longer than it may
	// wait. Nothing was committed; retrying once the recovery has ended
	// is safe.
	ErrRecovering = errors.New("store: a lock is a dead node's until its recovery ends")
	// ErrTooLarge: a file would need more than MaxFileSize bytes or a
	// path element is longer than MaxNameLen. Not retriable.
	ErrTooLarge = errors.New("store: too large")
)
