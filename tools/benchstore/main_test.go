package main

import (
	"strings"
	"testing"
	"time"
)

func TestRowVerdicts(t *testing.T) {
	for _, tc := range []struct {
		r    row
		want string
	}{
		{row{name: "rate", unit: "files/s", store: 60, peer: 100, target: 0.5}, "0.60x >=0.5x met"},
		{row{name: "rate", unit: "files/s", store: 40, peer: 100, target: 0.5}, "0.40x >=0.5x MISSED"},
		{row{name: "time", unit: "ms", store: 50, peer: 100, timeLike: true}, "2.00x"},
		{row{name: "bound", unit: "ms", store: 900, peer: 10, timeLike: true, target: 1000, absolute: true}, "<1000 met"},
		{row{name: "bound", unit: "ms", store: 1100, peer: 10, timeLike: true, target: 1000, absolute: true}, "<1000 MISSED"},
		{row{name: "step", unit: "FAILED", note: "boom"}, "FAILED: boom"},
	} {
		if got := tc.r.String(); !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q does not say %q", tc.r, got, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 6, 9, 8, 7}
	if p := percentile(xs, 0.5); p != 6 {
		t.Fatalf("p50 %v", p)
	}
	if p := percentile(xs, 0.99); p != 10 {
		t.Fatalf("p99 %v", p)
	}
	if xs[0] != 5 {
		t.Fatal("percentile sorted its input")
	}
}

func TestOptionsValidate(t *testing.T) {
	good := options{dur: time.Second, entries: 10000, seqMB: 64, rounds: 200, randomRuns: 3, stepTimeout: time.Minute}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*options){
		func(o *options) { o.dur = time.Millisecond },
		func(o *options) { o.entries = 5 },
		func(o *options) { o.seqMB = 1000 },
		func(o *options) { o.rounds = 1 },
		func(o *options) { o.randomRuns = 0 },
		func(o *options) { o.stepTimeout = time.Second },
	} {
		o := good
		bad(&o)
		if o.validate() == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestOnlySteps(t *testing.T) {
	o := options{dur: time.Second, entries: 10000, seqMB: 64, rounds: 200, stepTimeout: time.Minute, only: "churn,small"}
	want, err := o.steps()
	if err != nil {
		t.Fatal(err)
	}
	if !want["churn"] || !want["small"] || !want["bigdir"] || want["seq"] {
		t.Fatalf("-only churn,small runs %v; want churn, small and the big directory churn lists", want)
	}
	o.only = "small,nosuch"
	if o.validate() == nil {
		t.Fatal("-only with an unknown step accepted")
	}
	o.only = ""
	if all, _ := o.steps(); len(all) != len(allSteps) {
		t.Fatalf("no -only runs %d steps, want all %d", len(all), len(allSteps))
	}
}
