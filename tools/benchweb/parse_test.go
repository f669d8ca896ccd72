package main

import (
	"math"
	"testing"
)

const wrkOut = `Running 2s test @ http://127.0.0.1:36807/1k.bin
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.94ms    7.21ms  59.67ms   94.94%
    Req/Sec    23.26k     6.57k   31.77k    55.00%
  46712 requests in 2.03s, 8.82MB read
Requests/sec:  23044.36
Transfer/sec:      4.35MB
`

const h2Out = `finished in 2.00s, 8370.50 req/s, 8.40MB/s
requests: 16741 total, 16741 started, 16741 done, 16741 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 16741 2xx, 0 3xx, 0 4xx, 0 5xx
`

func TestParseLoadReports(t *testing.T) {
	l, err := parseWrk(wrkOut)
	if err != nil || math.Abs(l.rps-23044.36) > 0.01 || math.Abs(l.mbps-4.35) > 0.001 {
		t.Fatalf("wrk: %+v %v", l, err)
	}
	if _, err := parseWrk(wrkOut + "  Non-2xx or 3xx responses: 46583\n"); err == nil {
		t.Fatal("wrk run with error answers accepted")
	}
	if l, err := parseWrk("Requests/sec: 10.00\nTransfer/sec: 512.00KB\n"); err != nil || l.mbps != 0.5 {
		t.Fatalf("wrk KB: %+v %v", l, err)
	}
	l, err = parseH2load(h2Out)
	if err != nil || math.Abs(l.rps-8370.5) > 0.01 || math.Abs(l.mbps-8.4) > 0.001 {
		t.Fatalf("h2load: %+v %v", l, err)
	}
	bad := "finished in 2.00s, 100.00 req/s, 1.00MB/s\nrequests: 200 total, 200 started, 200 done, 150 succeeded, 50 failed, 0 errored, 0 timeout\n"
	if _, err := parseH2load(bad); err == nil {
		t.Fatal("h2load run with failed requests accepted")
	}
	if _, err := parseH2load("nothing"); err == nil {
		t.Fatal("empty h2load output accepted")
	}
}
