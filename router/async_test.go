package router

import (
	"net/http"
	"testing"
)

func TestPrefersAsync(t *testing.T) {
	for _, tc := range []struct {
		prefer []string
		want   bool
	}{
		{nil, false},
		{[]string{"respond-async"}, true},
		{[]string{"Respond-Async"}, true},
		{[]string{"return=minimal, respond-async; wait=5"}, true},
		{[]string{"return=minimal", " respond-async "}, true},
		{[]string{"respond-asyncx"}, false},
		{[]string{"wait=respond-async"}, false},
	} {
		h := http.Header{}
		for _, v := range tc.prefer {
			h.Add("Prefer", v)
		}
		if got := prefersAsync(h); got != tc.want {
			t.Errorf("prefersAsync(%q) = %v, want %v", tc.prefer, got, tc.want)
		}
	}
}
