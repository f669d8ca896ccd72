// Package iscsi is a userspace iSCSI initiator (RFC 7143) in pure Go, and
// a blockdev.Device over one logical unit, so an iSCSI LUN can be a leg of
// Shoal's mirror without a kernel initiator.
//
// What it speaks: login through the security stage (no authentication,
// or CHAP with MD5, one-way or mutual) and the operational stage
// (HeaderDigest/DataDigest CRC32C, MaxRecvDataSegmentLength,
// MaxBurstLength, FirstBurstLength, InitialR2T, ImmediateData,
// MaxOutstandingR2T, one connection per session, ErrorRecoveryLevel 0);
// SendTargets discovery; full-feature phase with many tagged commands in
// flight windowed by CmdSN/MaxCmdSN, Data-In, Data-Out, R2T, immediate and
// unsolicited data, NOP keepalive, asynchronous messages, task management
// (ABORT TASK, LUN RESET) and logout.
//
// SCSI: INQUIRY with VPD pages, REPORT LUNS, READ CAPACITY(16), TEST UNIT
// READY, READ/WRITE(10/16), SYNCHRONIZE CACHE and persistent reservations.
// A command that ends in anything but GOOD returns a *SCSIError; test it
// with errors.Is against blockdev.ErrReservationConflict, ErrUnitAttention,
// ErrMediumError, ErrIllegalRequest and the other sentinels.
//
// A dropped connection is logged in again with the same ISID (session
// reinstatement) with bounded retries. Reads and other idempotent commands
// are re-sent; a write whose completion was lost returns an error matching
// blockdev.ErrWriteOutcomeUnknown, never success and never a plain failure.
// After a re-login the session registers its reservation key again,
// because targets such as tgtd tie registrations to the login session;
// it does not when it saw itself preempted, and Config.Reregister can
// veto it.
//
// Addresses follow libiscsi: iscsi://[user[%password]@]host[:port]/target-iqn/lun.
// Importing the package registers the "iscsi" scheme with blockdev.Open:
//
//	import _ "github.com/shoal-ha/shoal/blockdev/iscsi"
//
//	dev, err := blockdev.Open(ctx, "iscsi://127.0.0.1:3260/iqn.2026-01.io.shoal:disk1/1",
//		blockdev.OpenOptions{Logger: log})
//	if err != nil { ... }
//	defer dev.Close()
//	err = dev.WriteAt(ctx, buf, 0)
//	if errors.Is(err, blockdev.ErrWriteOutcomeUnknown) { ... the range may hold old or new data ... }
//	pr := dev.(blockdev.Reservations)
//	err = pr.Register(ctx, myKey)
//
// Or with full control:
//
//	cfg := iscsi.DefaultConfig()
//	cfg.Portal, cfg.Target, cfg.LUN = "10.0.0.5:3260", "iqn.2026-01.io.shoal:disk1", 1
//	cfg.User, cfg.Secret = "shoal", "a-long-secret"
//	cfg.HeaderDigest, cfg.DataDigest = true, true
//	cfg.Logger = log
//	dev, err := iscsi.Open(ctx, cfg)
//
// The protocol core (PDU and sense decoders, login and negotiation state,
// the command window) is deterministic and has no sockets; the connection
// layer around it owns the goroutines.
//
// How a connection moves bytes: one reader goroutine reads the target's
// PDUs and hands each answer to the waiting caller, large Data-In segments
// straight into the caller's buffer; the callers it woke in one batch
// queue their next commands, and these leave in one writev when the
// reader runs out of input. On TCP the reads and writes are raw
// non-blocking system calls and only the waiting goes through the Go
// poller (see sockio.go for why).
package iscsi
