package router

import (
	"slices"
	"testing"

	"github.com/velo-run/velo/internal/store"
)

// TestVersions: the route version a router reports moves up only over
// versions all served, notes coming in any order; a whole read covers
// everything up to what it read.
func TestVersions(t *testing.T) {
	var v versions
	v.upTo(3)
	v.noted([]int64{5})
	if got := v.get(); got != 3 {
		t.Fatalf("applied %d with 4 not served, want 3", got)
	}
	v.noted([]int64{4, 2})
	if got := v.get(); got != 5 {
		t.Fatalf("applied %d after 4 came, want 5", got)
	}
	v.noted([]int64{7})
	v.upTo(6)
	if got := v.get(); got != 7 {
		t.Fatalf("applied %d after a whole read at 6 with 7 served, want 7", got)
	}
	v.upTo(1) // an older read does not take it back
	if got := v.get(); got != 7 {
		t.Fatalf("applied went back to %d", got)
	}
}

// TestCollectVersions: collect gathers the versions of the notes it
// coalesces, and a versioned note naming no component reads everything.
func TestCollectVersions(t *testing.T) {
	c := make(chan store.Note, 4)
	c <- store.RoutesChangedAt("b", 8)
	c <- store.RoutesChangedFor("c")
	names, vs := collect(store.RoutesChangedAt("a", 7), c)
	if !slices.Equal(names, []string{"a", "b", "c"}) || !slices.Equal(vs, []int64{7, 8}) {
		t.Fatalf("collect = %v, %v", names, vs)
	}
	c <- store.RoutesChangedAt("b", 10)
	names, vs = collect(store.RoutesChangedAt("", 9), c)
	if names != nil || !slices.Equal(vs, []int64{9, 10}) {
		t.Fatalf("collect of a note for every component = %v, %v", names, vs)
	}
}
