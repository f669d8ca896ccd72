package iscsi

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
)

// Inquiry is the standard INQUIRY data of a logical unit.
type Inquiry = scsi.InquiryData

// Capacity is the READ CAPACITY(16) answer.
type Capacity = scsi.Capacity

// Designator is one entry of the device identification VPD page.
type Designator = scsi.Designator

// TestUnitReady sends TEST UNIT READY to lun.
func (s *Session) TestUnitReady(ctx context.Context, lun uint64) error {
	_, err := s.run(ctx, &cmd{cdb: scsi.TestUnitReady(), lun: lun}, idempotent)
	return err
}

// Inquiry returns the standard INQUIRY data of lun.
func (s *Session) Inquiry(ctx context.Context, lun uint64) (Inquiry, error) {
	buf := make([]byte, 96)
	r, err := s.run(ctx, &cmd{cdb: scsi.Inquiry(false, 0, uint16(len(buf))), lun: lun, read: buf}, idempotent)
	if err != nil {
		return Inquiry{}, err
	}
	return scsi.ParseInquiry(buf[:r.N])
}

// InquiryVPD returns the payload of vital product data page of lun.
func (s *Session) InquiryVPD(ctx context.Context, lun uint64, page byte) ([]byte, error) {
	buf := make([]byte, 4096)
	r, err := s.run(ctx, &cmd{cdb: scsi.Inquiry(true, page, uint16(len(buf))), lun: lun, read: buf}, idempotent)
	if err != nil {
		return nil, err
	}
	v, err := scsi.ParseVPD(buf[:r.N])
	if err != nil {
		return nil, err
	}
	if v.Page != page {
		return nil, fmt.Errorf("%w: asked for VPD page 0x%02x, got 0x%02x", ErrProtocol, page, v.Page)
	}
	return v.Data, nil
}

// SupportedVPDPages lists the VPD pages lun offers (page 0x00).
func (s *Session) SupportedVPDPages(ctx context.Context, lun uint64) ([]byte, error) {
	return s.InquiryVPD(ctx, lun, 0x00)
}

// UnitSerial returns the unit serial number (VPD page 0x80).
func (s *Session) UnitSerial(ctx context.Context, lun uint64) (string, error) {
	p, err := s.InquiryVPD(ctx, lun, 0x80)
	if err != nil {
		return "", err
	}
	return scsi.ParseUnitSerial(p), nil
}

// DeviceIdentifiers returns the device identification VPD page (0x83).
func (s *Session) DeviceIdentifiers(ctx context.Context, lun uint64) ([]Designator, error) {
	p, err := s.InquiryVPD(ctx, lun, 0x83)
	if err != nil {
		return nil, err
	}
	return scsi.ParseDeviceID(p)
}

// BlockLimits returns the maximum and optimal transfer lengths in blocks
// from the block limits VPD page (0xb0); zero means not reported.
func (s *Session) BlockLimits(ctx context.Context, lun uint64) (maxBlocks, optBlocks uint32, err error) {
	p, err := s.InquiryVPD(ctx, lun, 0xb0)
	if err != nil {
		return 0, 0, err
	}
	if len(p) < 12 {
		return 0, 0, fmt.Errorf("%w: block limits page of %d bytes", scsi.ErrShortData, len(p))
	}
	return binary.BigEndian.Uint32(p[4:8]), binary.BigEndian.Uint32(p[8:12]), nil
}

// ReadCapacity returns READ CAPACITY(16) of lun.
func (s *Session) ReadCapacity(ctx context.Context, lun uint64) (Capacity, error) {
	buf := make([]byte, 32)
	r, err := s.run(ctx, &cmd{cdb: scsi.ReadCapacity16(uint32(len(buf))), lun: lun, read: buf}, idempotent)
	if err != nil {
		return Capacity{}, err
	}
	return scsi.ParseCapacity16(buf[:r.N])
}

// ReportLUNs lists the target's logical units. It addresses LUN 0, which
// every target must answer REPORT LUNS on.
func (s *Session) ReportLUNs(ctx context.Context) ([]uint64, error) {
	alloc := 1024
	for range 3 {
		buf := make([]byte, alloc)
		r, err := s.run(ctx, &cmd{cdb: scsi.ReportLUNs(uint32(alloc)), lun: 0, read: buf}, idempotent)
		if err != nil {
			return nil, err
		}
		luns, total, err := scsi.ParseReportLUNs(buf[:r.N])
		if err != nil {
			return nil, err
		}
		if total <= len(luns) || alloc >= 1<<20 {
			return luns, nil
		}
		alloc = 8 + 8*total
	}
	return nil, fmt.Errorf("%w: REPORT LUNS list keeps growing", ErrProtocol)
}

// SynchronizeCache makes lun's completed writes durable.
func (s *Session) SynchronizeCache(ctx context.Context, lun uint64) error {
	_, err := s.run(ctx, &cmd{cdb: scsi.SyncCache(s.cfg.CDB16), lun: lun}, idempotent)
	return err
}

// Read reads len(p) bytes of whole blocks from lba of lun.
func (s *Session) Read(ctx context.Context, lun, lba uint64, blocks uint32, p []byte) error {
	r, err := s.run(ctx, &cmd{cdb: scsi.Read(lba, blocks, s.cfg.CDB16), lun: lun, read: p}, idempotent)
	if err != nil {
		return err
	}
	if r.N != len(p) {
		return fmt.Errorf("%w: read of %d bytes returned %d", ErrProtocol, len(p), r.N)
	}
	return nil
}

// Write writes p (whole blocks) at lba of lun.
func (s *Session) Write(ctx context.Context, lun, lba uint64, blocks uint32, p []byte) error {
	if s.cfg.ReadOnly {
		return fmt.Errorf("%w: WRITE of %d blocks at LBA %d of LUN %d", blockdev.ErrReadOnly, blocks, lba, lun)
	}
	_, err := s.run(ctx, &cmd{cdb: scsi.Write(lba, blocks, false, s.cfg.CDB16), lun: lun, write: p}, mutating)
	return err
}

// LUNReset asks the target to reset lun (LOGICAL UNIT RESET task
// management): every task on it is aborted, for every initiator. The next
// command meets a unit attention, which run retries.
func (s *Session) LUNReset(ctx context.Context, lun uint64) error {
	c, err := s.connection(ctx)
	if err != nil {
		return err
	}
	resp, err := c.taskMgmt(pdu.TMFLogicalUnitReset, lun, pdu.ReservedTag, 0)
	if err != nil {
		return err
	}
	if resp != pdu.TMFComplete {
		return fmt.Errorf("%w: LOGICAL UNIT RESET answered 0x%02x", ErrRejected, resp)
	}
	return nil
}
