package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The recovery steps a survivor's failover story tells, in the order the
// table prints them (fencing/recovery's Story: "failover: fenced: ...
// took=258ms").
var storySteps = []struct{ key, line string }{
	{"fence", "fenced"},
	{"record", "lease revoked, fence recorded"},
	{"resync", "resynced"},
	{"replay", "journal replayed"},
	{"release", "locks released"},
}

// story is one crash run's recovery as the survivors' logs tell it.
type story struct {
	// found: a survivor logged the victim's recovery as done.
	found bool
	// detected is the first survivor's failure detector line about the
	// victim ("detect: peer suspected"), or, without a detector, its
	// "failover: suspected" line; suspected and done are the first
	// survivor's "failover: suspected" and "failover: done" lines (the
	// recovery asked for, and finished); all from the SIGKILL. by is how
	// it was suspected.
	detected, suspected, done time.Duration
	by                        string
	// took is each step's time (storySteps' keys) as the record says.
	took map[string]time.Duration
	// answer is the run's last retried answer, from the SIGKILL.
	answer time.Duration
}

func (s story) String() string {
	if !s.found {
		return "the survivors' logs do not tell the recovery"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "detected +%v, suspected +%v (%s)", ms3(s.detected), ms3(s.suspected), s.by)
	for _, st := range storySteps {
		fmt.Fprintf(&b, ", %s %v", st.key, ms3(s.took[st.key]))
	}
	fmt.Fprintf(&b, ", done +%v", ms3(s.done))
	return b.String()
}

// readStory reads the victim's recovery after killed from the survivors'
// logs of the demo cluster d.
func readStory(d *demoCluster, victim int, killed time.Time) story {
	var logs []io.Reader
	for n := 1; n <= 3; n++ {
		if n == victim {
			continue
		}
		f, err := os.Open(filepath.Join(d.dir, fmt.Sprintf("node%d.log", n)))
		if err != nil {
			continue
		}
		defer f.Close()
		logs = append(logs, f)
	}
	return parseStory(logs, fmt.Sprintf("node%d/", victim), killed)
}

// parseStory finds, in logs, the failover story lines of the recovery of
// the node whose incarnations start with prefix ("node2/") logged after
// killed, and puts together the first of each.
func parseStory(logs []io.Reader, prefix string, killed time.Time) story {
	st := story{took: map[string]time.Duration{}}
	var detectedAt, suspectedAt, doneAt time.Time
	for _, r := range logs {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if at, what, kv, ok := logLine(sc.Text(), ".detect: "); ok && what == "peer suspected" && !at.Before(killed) &&
				strings.HasPrefix(kv["peer"], prefix) && (detectedAt.IsZero() || at.Before(detectedAt)) {
				detectedAt = at
				continue
			}
			at, what, kv, ok := logLine(sc.Text(), "failover: ")
			if !ok || at.Before(killed) || !strings.HasPrefix(kv["recovery"], prefix) {
				continue
			}
			switch what {
			case "suspected":
				if suspectedAt.IsZero() || at.Before(suspectedAt) {
					suspectedAt, st.by = at, kv["how"]
				}
			case "done":
				if doneAt.IsZero() || at.Before(doneAt) {
					doneAt = at
				}
			default:
				for _, s := range storySteps {
					if s.line != what {
						continue
					}
					if _, seen := st.took[s.key]; !seen {
						if d, err := time.ParseDuration(kv["took"]); err == nil {
							st.took[s.key] = d
						}
					}
				}
			}
		}
	}
	if suspectedAt.IsZero() || doneAt.IsZero() {
		return st
	}
	if detectedAt.IsZero() || suspectedAt.Before(detectedAt) {
		detectedAt = suspectedAt
	}
	st.found = true
	st.detected, st.suspected, st.done = detectedAt.Sub(killed), suspectedAt.Sub(killed), doneAt.Sub(killed)
	return st
}

// logLine splits one hclog line whose message starts with marker, such as
// a failover story's (marker "failover: ")
// `2026-11-30T03:29:23.217Z [INFO]  shoald: failover: fenced: node=node2
// recovery=node3/9e09cf406b6f took=258ms how="lease expired"`, into its
// time, the rest of its message ("fenced") and its key/value pairs.
func logLine(line, marker string) (at time.Time, what string, kv map[string]string, ok bool) {
	ts, rest, found := strings.Cut(line, " ")
	if !found {
		return at, "", nil, false
	}
	_, rest, found = strings.Cut(rest, marker)
	if !found {
		return at, "", nil, false
	}
	what, rest, found = strings.Cut(rest, ": ")
	if !found {
		return at, "", nil, false
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return at, "", nil, false
	}
	kv = map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		k, v, found := strings.Cut(rest, "=")
		if !found {
			break
		}
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				break
			}
			kv[k], rest = v[1:1+end], v[2+end:]
			continue
		}
		val, next, _ := strings.Cut(v, " ")
		kv[k], rest = val, next
	}
	return at, what, kv, true
}

// breakdown prints one row of medians of stories to tw.
func breakdown(tw io.Writer, title string, stories []story) {
	var detected, suspected, done, answer, after []time.Duration
	took := map[string][]time.Duration{}
	by := map[string]int{}
	for _, s := range stories {
		if !s.found {
			continue
		}
		detected, suspected = append(detected, s.detected), append(suspected, s.suspected)
		done, answer, after = append(done, s.done), append(answer, s.answer), append(after, s.answer-s.done)
		for _, st := range storySteps {
			took[st.key] = append(took[st.key], s.took[st.key])
		}
		how := s.by
		if strings.HasPrefix(how, "recovery requested by") {
			how = "recovery request (a peer's missed heartbeats)"
		}
		by[how]++
	}
	if len(suspected) == 0 {
		fmt.Fprintf(tw, "%s\tno run's recovery found in the logs\n", title)
		return
	}
	med := func(s []time.Duration) time.Duration { return ms3(quantile(sorted(s), 0.5)) }
	fmt.Fprintf(tw, "%s\t+%v\t+%v", title, med(detected), med(suspected))
	for _, st := range storySteps {
		fmt.Fprintf(tw, "\t%v", med(took[st.key]))
	}
	var hows []string
	for h, n := range by {
		hows = append(hows, fmt.Sprintf("%s x%d", h, n))
	}
	slices.Sort(hows)
	fmt.Fprintf(tw, "\t+%v\t+%v\t%v\t%s\n", med(done), med(answer), med(after), strings.Join(hows, ", "))
}
