package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// Two survivors' logs of one recovery of node3 (the first tells it as the
// coordinator; the second learns it from the record), with an earlier
// recovery of node3 and one of node1 around it.
const storyNode1 = `2026-11-30T03:29:10.000Z [INFO]  shoald: failover: suspected: node=node1 recovery=node3/0ld how="its lease expired"
2026-11-30T03:29:10.500Z [INFO]  shoald: failover: done: node=node1 recovery=node3/0ld took=500ms since_suspected=500ms coordinator=node1/a
2026-11-30T03:29:22.958Z [INFO]  shoald: failover: suspected: node=node1 recovery=node3/9e09 how="recovery requested by node2/b"
2026-11-30T03:29:23.217Z [INFO]  shoald: failover: fenced: node=node1 recovery=node3/9e09 took=258ms coordinator=node1/a how="persistent reservation preempted"
2026-11-30T03:29:23.220Z [INFO]  shoald: failover: lease revoked, fence recorded: node=node1 recovery=node3/9e09 took=3ms coordinator=node1/a
2026-11-30T03:29:23.249Z [INFO]  shoald: failover: resynced: node=node1 recovery=node3/9e09 took=30ms coordinator=node1/a regions=4
2026-11-30T03:29:23.612Z [INFO]  shoald: failover: journal replayed: node=node1 recovery=node3/9e09 took=363ms coordinator=node1/a records=10
2026-11-30T03:29:23.617Z [INFO]  shoald: failover: locks released: node=node1 recovery=node3/9e09 took=5ms coordinator=node1/a locks=52
2026-11-30T03:29:23.619Z [INFO]  shoald: failover: done: node=node1 recovery=node3/9e09 took=661ms since_suspected=659ms coordinator=node1/a
2026-11-30T03:29:40.000Z [INFO]  shoald: failover: suspected: node=node1 recovery=node1/c how="its lease expired"
`

const storyNode2 = `2026-11-30T03:29:22.400Z [WARN]  shoald.detect: peer suspected: node=node2 peer=node3/0ld silent=412ms timeout=400ms
2026-11-30T03:29:22.900Z [WARN]  shoald.detect: peer suspected: node=node2 peer=node3/9e09 silent=412ms timeout=400ms
2026-11-30T03:29:22.900Z [WARN]  shoald.detect: peer silent: asking for its recovery: peer=node3/9e09 silent=412ms
2026-11-30T03:29:22.950Z [INFO]  shoald: failover: suspected: node=node2 recovery=node3/9e09 how="no heartbeat"
2026-11-30T03:29:23.700Z [INFO]  shoald: failover: fenced: node=node2 recovery=node3/9e09 took=999ms coordinator=node1/a how="x"
2026-11-30T03:29:23.701Z [INFO]  shoald: failover: done: node=node2 recovery=node3/9e09 took=661ms since_suspected=659ms coordinator=node1/a
`

func TestParseStory(t *testing.T) {
	killed := time.Date(2026, 11, 30, 3, 29, 22, 500e6, time.UTC)
	st := parseStory([]io.Reader{strings.NewReader(storyNode1), strings.NewReader(storyNode2)}, "node3/", killed)
	if !st.found {
		t.Fatal("recovery not found")
	}
	if st.suspected != 450*time.Millisecond || st.by != "no heartbeat" {
		t.Errorf("suspected +%v by %q, want +450ms by the earliest line's how", st.suspected, st.by)
	}
	if st.detected != 400*time.Millisecond {
		t.Errorf("detected +%v, want +400ms (the detector's line after the kill)", st.detected)
	}
	if st.done != 1119*time.Millisecond {
		t.Errorf("done +%v, want +1.119s (the first survivor to tell it)", st.done)
	}
	want := map[string]time.Duration{"fence": 258 * time.Millisecond, "record": 3 * time.Millisecond, "resync": 30 * time.Millisecond,
		"replay": 363 * time.Millisecond, "release": 5 * time.Millisecond}
	for k, v := range want {
		if st.took[k] != v {
			t.Errorf("%s took %v, want %v", k, st.took[k], v)
		}
	}
	if st := parseStory([]io.Reader{strings.NewReader(storyNode1)}, "node2/", killed); st.found {
		t.Errorf("a recovery of node2 found in logs without one: %+v", st)
	}
	if st := parseStory([]io.Reader{strings.NewReader(storyNode1)}, "node3/", killed); st.detected != st.suspected || st.detected != 458*time.Millisecond {
		t.Errorf("without a detector line: detected +%v, suspected +%v; want both +458ms", st.detected, st.suspected)
	}
	at, what, kv, ok := logLine(`2026-11-30T03:29:23.217Z [INFO]  shoald: failover: fenced: node=node1 recovery=node3/9e09 how="lease expired plus self-fence margin" took=258ms`, "failover: ")
	if !ok || what != "fenced" || kv["how"] != "lease expired plus self-fence margin" || kv["took"] != "258ms" || at.Nanosecond() != 217e6 {
		t.Errorf("logLine: %v %q %v %v", at, what, kv, ok)
	}
	if _, _, _, ok := logLine("2026-11-30T03:29:23.217Z [INFO]  shoald: web tier serving: node=node1", "failover: "); ok {
		t.Error("a line without a failover story taken for one")
	}
}
