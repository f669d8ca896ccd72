package recovery

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// InProgress keeps the records of unfinished recoveries.
func InProgress(recs []Record) []Record {
	var out []Record
	for _, r := range recs {
		if !r.Done() {
			out = append(out, r)
		}
	}
	return out
}

// StepAttempts counts the attempts at the step a status line shows, the
// way History counts them (the attempt that succeeded included): for a
// recovery in progress the failed attempts at the next step plus the one
// running or about to run; for a finished recovery those of its last step.
func (r Record) StepAttempts() int {
	if r.Done() {
		if len(r.History) == 0 {
			return 0
		}
		return r.History[len(r.History)-1].Attempts
	}
	return r.Attempts + 1
}

// WriteTable writes recs as the table `shoald status` and `lockctl ls`
// print: which node, which step, since when, how many attempts at that
// step (StepAttempts), the last error and what a step that runs long
// waits for.
func WriteTable(w io.Writer, recs []Record, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tINCARNATION\tSTEP\tSINCE\tATTEMPTS\tCOORDINATOR\tLAST ERROR\tWAITING FOR")
	for _, r := range recs {
		step := r.Next().String()
		if r.Done() {
			step = "done"
		}
		since := now.Sub(r.StepSince).Truncate(time.Millisecond)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s (%s)\t%d\t%s\t%s\t%s\n",
			r.Victim.Name, r.Victim.Incarnation, step, r.StepSince.UTC().Format(time.RFC3339), since,
			r.StepAttempts(), r.Coordinator, r.LastError, strings.Join(waitStrings(r.Waiting), "; "))
	}
	return tw.Flush()
}
