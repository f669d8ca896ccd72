package storenode

import "testing"

func TestFSPath(t *testing.T) {
	for in, want := range map[string]string{
		"": ".", "/": ".", ".": ".", "//": ".", "/site": "site", "site/": "site",
		"/site/docs/a.html": "site/docs/a.html", "/../etc": "etc", "a/../b": "b", "./a": "a",
	} {
		if got := FSPath(in); got != want {
			t.Errorf("FSPath(%q) = %q, want %q", in, got, want)
		}
	}
}
