package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/iscsi"
)

// iscsiOpts are the flags shared by the iscsi subcommands.
type iscsiOpts struct {
	json          bool
	initiatorName string
	timeout       time.Duration
	verbose       bool
	// stderr receives the -v log (the command's error writer).
	stderr io.Writer
}

func (o *iscsiOpts) register(c *cobra.Command) {
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	c.Flags().StringVar(&o.initiatorName, "initiator-name", iscsi.DefaultConfig().InitiatorName, "iSCSI name of this initiator")
	c.Flags().DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	c.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "log the iSCSI conversation to stderr")
}

// begin parses url into a configuration and bounds ctx by --timeout.
func (o *iscsiOpts) begin(ctx context.Context, url string) (context.Context, context.CancelFunc, iscsi.Config, iscsi.Address, error) {
	a, err := iscsi.ParseURL(url)
	if err != nil {
		return nil, nil, iscsi.Config{}, a, err
	}
	cfg, err := o.config(url)
	if err != nil {
		return nil, nil, cfg, a, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	return ctx, cancel, cfg, a, nil
}

func (o *iscsiOpts) config(url string) (iscsi.Config, error) {
	cfg, err := iscsi.ConfigFromURL(url)
	if err != nil {
		return cfg, err
	}
	cfg.InitiatorName = o.initiatorName
	cfg.NopInterval = 0
	cfg.ReconnectAttempts = 1
	if o.verbose {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "iscsi", Level: hclog.Debug, Output: o.stderr})
	}
	return cfg, nil
}

func addIscsi(root *cobra.Command) {
	iscsiCmd := &cobra.Command{
		Use:   "iscsi",
		Short: "Look at iSCSI targets through Shoal's initiator",
		Long: "Look at iSCSI targets through Shoal's own userspace initiator.\n" +
			"Addresses: iscsi://[user[%password]@]host[:port][/target-iqn[/lun]]",
	}
	var lsOpts iscsiOpts
	ls := &cobra.Command{
		Use:   "ls URL",
		Short: "List the targets of a portal (or one target, or one LUN) with their LUNs and sizes",
		Example: "  shoalblk iscsi ls iscsi://127.0.0.1:3260\n" +
			"  shoalblk iscsi ls --json iscsi://user%secret@10.0.0.5/iqn.2026-01.io.shoal:disk1",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lsOpts.stderr = cmd.ErrOrStderr()
			return iscsiLs(cmd.Context(), cmd.OutOrStdout(), args[0], &lsOpts)
		},
	}
	lsOpts.register(ls)
	var prOpts iscsiOpts
	pr := &cobra.Command{
		Use:     "pr URL",
		Short:   "Show the persistent reservation keys and the reservation of a LUN",
		Example: "  shoalblk iscsi pr iscsi://127.0.0.1:3260/iqn.2026-01.io.shoal:disk1/1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prOpts.stderr = cmd.ErrOrStderr()
			return iscsiPR(cmd.Context(), cmd.OutOrStdout(), args[0], &prOpts)
		},
	}
	prOpts.register(pr)
	iscsiCmd.AddCommand(ls, pr)
	root.AddCommand(iscsiCmd)
}

// iscsiLUNReport is one logical unit in `iscsi ls`.
type iscsiLUNReport struct {
	LUN       uint64 `json:"lun"`
	Type      string `json:"type"`
	Vendor    string `json:"vendor,omitempty"`
	Product   string `json:"product,omitempty"`
	Size      uint64 `json:"size_bytes,omitempty"`
	BlockSize uint32 `json:"block_size,omitempty"`
	Error     string `json:"error,omitempty"`
}

// iscsiTargetReport is one target in `iscsi ls`.
type iscsiTargetReport struct {
	Target    string           `json:"target"`
	Addresses []string         `json:"addresses,omitempty"`
	LUNs      []iscsiLUNReport `json:"luns,omitempty"`
	Error     string           `json:"error,omitempty"`
}

func iscsiLs(ctx context.Context, w io.Writer, url string, o *iscsiOpts) error {
	ctx, cancel, cfg, a, err := o.begin(ctx, url)
	if err != nil {
		return err
	}
	defer cancel()
	var targets []iscsi.TargetInfo
	if cfg.Target != "" {
		targets = []iscsi.TargetInfo{{Name: cfg.Target}}
	} else {
		targets, err = iscsi.Discover(ctx, cfg)
		if err != nil {
			return err
		}
	}
	var reports []iscsiTargetReport
	for _, t := range targets {
		rep := iscsiTargetReport{Target: t.Name, Addresses: t.Addresses}
		tcfg := cfg
		tcfg.Target = t.Name
		s, err := iscsi.Dial(ctx, tcfg)
		if err != nil {
			rep.Error = err.Error()
			reports = append(reports, rep)
			continue
		}
		luns, err := s.ReportLUNs(ctx)
		if err != nil {
			rep.Error = err.Error()
		}
		sort.Slice(luns, func(i, j int) bool { return luns[i] < luns[j] })
		// An address that names a LUN lists that LUN only.
		if a.HasLUN && err == nil {
			if slices.Contains(luns, a.LUN) {
				luns = []uint64{a.LUN}
			} else {
				rep.Error = fmt.Sprintf("LUN %d not found (the target has LUNs %v)", a.LUN, luns)
				luns = nil
			}
		}
		for _, l := range luns {
			lr := iscsiLUNReport{LUN: l}
			inq, err := s.Inquiry(ctx, l)
			if err != nil {
				lr.Error = err.Error()
				rep.LUNs = append(rep.LUNs, lr)
				continue
			}
			lr.Type, lr.Vendor, lr.Product = iscsiTypeName(inq.DeviceType), inq.Vendor, inq.Product
			if inq.DeviceType == 0 {
				if c, err := s.ReadCapacity(ctx, l); err != nil {
					lr.Error = err.Error()
				} else {
					lr.Size, lr.BlockSize = c.Bytes(), c.BlockLength
				}
			}
			rep.LUNs = append(rep.LUNs, lr)
		}
		_ = s.Close()
		reports = append(reports, rep)
	}
	// What could not be read is in the listing and also fails the
	// command, so that scripts and operators cannot take it for a
	// healthy target.
	var problems []error
	for _, r := range reports {
		if r.Error != "" {
			problems = append(problems, fmt.Errorf("target %s: %s", r.Target, r.Error))
		}
		for _, l := range r.LUNs {
			if l.Error != "" {
				problems = append(problems, fmt.Errorf("target %s LUN %d: %s", r.Target, l.LUN, l.Error))
			}
		}
	}
	if err := iscsiLsPrint(w, reports, o.json); err != nil {
		return err
	}
	return errors.Join(problems...)
}

func iscsiLsPrint(w io.Writer, reports []iscsiTargetReport, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(reports)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tLUN\tTYPE\tVENDOR/PRODUCT\tSIZE\tBLOCK")
	for _, r := range reports {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t(error: %s)\n", r.Target, r.Error)
			continue
		}
		for _, l := range r.LUNs {
			if l.Error != "" {
				fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t(error: %s)\n", r.Target, l.LUN, l.Error)
				continue
			}
			size, bs := "-", "-"
			if l.Size > 0 {
				size, bs = iscsiHumanSize(l.Size), fmt.Sprint(l.BlockSize)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", r.Target, l.LUN, l.Type,
				strings.TrimSpace(l.Vendor+" "+l.Product), size, bs)
		}
	}
	return tw.Flush()
}

// iscsiPRReport is the output of `iscsi pr`.
type iscsiPRReport struct {
	Target      string   `json:"target"`
	LUN         uint64   `json:"lun"`
	Generation  uint32   `json:"generation"`
	Keys        []string `json:"keys"`
	Reserved    bool     `json:"reserved"`
	Holder      string   `json:"holder,omitempty"`
	Type        uint8    `json:"type,omitempty"`
	TypeName    string   `json:"type_name,omitempty"`
	Supported   []string `json:"supported_types,omitempty"`
	Persistence bool     `json:"persist_through_power_loss"`
}

func iscsiPR(ctx context.Context, w io.Writer, url string, o *iscsiOpts) error {
	ctx, cancel, cfg, a, err := o.begin(ctx, url)
	if err != nil {
		return err
	}
	defer cancel()
	if cfg.Target == "" || !a.HasLUN {
		return fmt.Errorf("%s names no target and LUN (iscsi://host[:port]/target-iqn/lun)", a)
	}
	s, err := iscsi.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	keys, gen, err := s.ReadKeys(ctx, cfg.LUN)
	if err != nil {
		return fmt.Errorf("READ KEYS of LUN %d at %s: %w", cfg.LUN, cfg.Target, err)
	}
	res, err := s.ReadReservation(ctx, cfg.LUN)
	if err != nil {
		return fmt.Errorf("READ RESERVATION of LUN %d at %s: %w", cfg.LUN, cfg.Target, err)
	}
	rep := iscsiPRReport{Target: cfg.Target, LUN: cfg.LUN, Generation: gen, Keys: []string{}, Reserved: res.Held}
	for _, k := range keys {
		rep.Keys = append(rep.Keys, fmt.Sprintf("0x%016x", k))
	}
	if res.Held {
		rep.Holder = fmt.Sprintf("0x%016x", res.Key)
		rep.Type, rep.TypeName = uint8(res.Type), iscsiPRTypeName(uint8(res.Type))
	}
	if caps, err := s.ReportCapabilities(ctx, cfg.LUN); err == nil {
		rep.Persistence = caps.PTPLA
		for _, t := range []uint8{1, 3, 5, 6, 7, 8} {
			if caps.TypesValid && caps.Supports(t) {
				rep.Supported = append(rep.Supported, iscsiPRTypeName(t))
			}
		}
	}
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target\t%s\n", rep.Target)
	fmt.Fprintf(tw, "lun\t%d\n", rep.LUN)
	fmt.Fprintf(tw, "generation\t%d\n", rep.Generation)
	if len(rep.Keys) == 0 {
		fmt.Fprintf(tw, "keys\t(none registered)\n")
	}
	for i, k := range rep.Keys {
		label := ""
		if i == 0 {
			label = "keys"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, k)
	}
	if rep.Reserved {
		fmt.Fprintf(tw, "reservation\t%s by %s\n", rep.TypeName, rep.Holder)
	} else {
		fmt.Fprintf(tw, "reservation\t(none)\n")
	}
	if len(rep.Supported) > 0 {
		fmt.Fprintf(tw, "supported types\t%s\n", strings.Join(rep.Supported, ", "))
	}
	return tw.Flush()
}

func iscsiPRTypeName(t uint8) string {
	switch t {
	case 1:
		return "Write Exclusive"
	case 3:
		return "Exclusive Access"
	case 5:
		return "Write Exclusive - Registrants Only"
	case 6:
		return "Exclusive Access - Registrants Only"
	case 7:
		return "Write Exclusive - All Registrants"
	case 8:
		return "Exclusive Access - All Registrants"
	}
	return fmt.Sprintf("type %d", t)
}

func iscsiTypeName(t byte) string {
	switch t {
	case 0x00:
		return "disk"
	case 0x01:
		return "tape"
	case 0x05:
		return "cd/dvd"
	case 0x0c:
		return "controller"
	case 0x0d:
		return "enclosure"
	}
	return fmt.Sprintf("type 0x%02x", t)
}

func iscsiHumanSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
