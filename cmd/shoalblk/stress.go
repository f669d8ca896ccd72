package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// The stress commands are for test rigs: several processes, each a node
// slot, write self-describing blocks under region locks; stress-verify
// then checks every block is whole and every acknowledged write is there.

const stressMagic = 0x53545253 // "STRS"

// stressBlock fills b (one block at volume offset off) with a header, a
// random payload and a trailing CRC.
func stressBlock(b []byte, off int64, slot int, seq uint64, rng *rand.Rand) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], stressMagic)
	le.PutUint32(b[4:], uint32(slot))
	le.PutUint64(b[8:], seq)
	le.PutUint64(b[16:], uint64(off))
	for i := 24; i < len(b)-4; i += 8 {
		le.PutUint64(b[i:], rng.Uint64())
	}
	le.PutUint32(b[len(b)-4:], crc32.ChecksumIEEE(b[:len(b)-4]))
}

// checkStressBlock says whether b is zero or a whole stress block for off,
// and returns its writer and sequence.
func checkStressBlock(b []byte, off int64) (slot int, seq uint64, zero bool, err error) {
	if mirror.IsZeroBlock(b) {
		return 0, 0, true, nil
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != stressMagic || crc32.ChecksumIEEE(b[:len(b)-4]) != le.Uint32(b[len(b)-4:]) {
		return 0, 0, false, fmt.Errorf("block at %d is torn or foreign", off)
	}
	if int64(le.Uint64(b[16:])) != off {
		return 0, 0, false, fmt.Errorf("block at %d was written for offset %d", off, le.Uint64(b[16:]))
	}
	return int(le.Uint32(b[4:])), le.Uint64(b[8:]), false, nil
}

type stressRange struct{ From, To int64 } // block numbers, To exclusive

// stressUnderway is after how many writes stress says on stdout that it is
// under way ("slot N: K writes done").
const stressUnderway = 50

func addStress(root *cobra.Command) {
	var (
		vf       volumeFlags
		slot     int
		ops      int
		seed     uint64
		private  []int64
		shared   []int64
		record   string
		maxBlock int
	)
	c := &cobra.Command{
		Use:    "stress --slot N --lock-dir DIR [flags] LEG...",
		Short:  "Write self-describing blocks as node slot N (for test rigs)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if vf.lockDir == "" {
				return fmt.Errorf("--lock-dir is required: processes must share region locks")
			}
			if len(private) != 2 || len(shared) != 2 {
				return fmt.Errorf("--private and --shared take FROM,TO block numbers")
			}
			v, closeVol, err := vf.openVolume(ctx, args, slot, false, nil)
			if err != nil {
				return err
			}
			bs := int64(v.BlockSize())
			locker := fcntlLocker(vf.lockDir)
			rng := rand.New(rand.NewPCG(seed, uint64(slot)))
			acked := map[int64]uint64{} // private block -> last acknowledged seq
			for i := 0; i < ops; i++ {
				r := stressRange{private[0], private[1]}
				if rng.IntN(2) == 0 {
					r = stressRange{shared[0], shared[1]}
				}
				nb := int64(1 + rng.IntN(maxBlock))
				if nb > r.To-r.From {
					nb = r.To - r.From
				}
				first := r.From + rng.Int64N(r.To-r.From-nb+1)
				buf := make([]byte, nb*bs)
				seq := uint64(i + 1)
				for k := int64(0); k < nb; k++ {
					stressBlock(buf[k*bs:(k+1)*bs], (first+k)*bs, slot, seq, rng)
				}
				lk, err := locker.LockRegion(ctx, mirror.RegionRequest{Volume: v.UUID().String() + "-app", Off: first * bs, Length: nb * bs, Exclusive: true})
				if err != nil {
					closeVol()
					return err
				}
				err = v.WriteAt(ctx, buf, first*bs)
				lk.Release()
				if err != nil {
					closeVol()
					return fmt.Errorf("write %d: %w", i, err)
				}
				if r.From == private[0] {
					for k := int64(0); k < nb; k++ {
						acked[first+k] = seq
					}
				}
				if i+1 == min(stressUnderway, ops) {
					// Rigs wait for this line to act mid-run.
					fmt.Fprintf(cmd.OutOrStdout(), "slot %d: %d writes done\n", slot, i+1)
				}
			}
			closeVol()
			if record != "" {
				b, _ := json.Marshal(acked)
				return os.WriteFile(record, b, 0o644)
			}
			return nil
		},
	}
	vf.register(c, false)
	c.Flags().IntVar(&slot, "slot", 0, "node slot")
	c.Flags().IntVar(&ops, "ops", 100, "writes to do")
	c.Flags().Uint64Var(&seed, "seed", 1, "random seed")
	c.Flags().Int64SliceVar(&private, "private", nil, "FROM,TO: blocks only this process writes")
	c.Flags().Int64SliceVar(&shared, "shared", nil, "FROM,TO: blocks every process writes")
	c.Flags().IntVar(&maxBlock, "max-blocks", 8, "largest write in blocks")
	c.Flags().StringVar(&record, "record", "", "write the last acknowledged sequence of every private block here (JSON)")
	root.AddCommand(c)

	var (
		vf2     volumeFlags
		from    int64
		to      int64
		slot2   int
		record2 string
	)
	verify := &cobra.Command{
		Use:    "stress-verify --from A --to B [--slot N --record FILE] LEG...",
		Short:  "Check blocks written by stress (for test rigs)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			v, closeVol, err := vf2.openVolume(ctx, args, mirror.NoSlot, false, nil)
			if err != nil {
				return err
			}
			defer closeVol()
			want := map[int64]uint64{}
			if record2 != "" {
				b, err := os.ReadFile(record2)
				if err != nil {
					return err
				}
				if err := json.Unmarshal(b, &want); err != nil {
					return err
				}
			}
			bs := int64(v.BlockSize())
			buf := make([]byte, bs)
			bad := 0
			for blk := from; blk < to; blk++ {
				if err := v.ReadAt(ctx, buf, blk*bs); err != nil {
					return err
				}
				s, seq, zero, err := checkStressBlock(buf, blk*bs)
				if err != nil {
					fmt.Fprintln(stdout, err)
					bad++
					continue
				}
				if w, ok := want[blk]; ok && (zero || s != slot2 || seq != w) {
					fmt.Fprintf(stdout, "block %d: acknowledged write %d of slot %d lost (found slot %d seq %d)\n", blk, w, slot2, s, seq)
					bad++
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d bad blocks", bad)
			}
			fmt.Fprintf(stdout, "blocks %d to %d: all whole, %d acknowledged writes present\n", from, to, len(want))
			return nil
		},
	}
	vf2.register(verify, false)
	verify.Flags().Int64Var(&from, "from", 0, "first block")
	verify.Flags().Int64Var(&to, "to", 0, "end block (exclusive)")
	verify.Flags().IntVar(&slot2, "slot", 0, "slot whose record is checked")
	verify.Flags().StringVar(&record2, "record", "", "record file written by stress --record")
	root.AddCommand(verify)
}
