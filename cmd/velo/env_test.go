package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestKeepRecords: VELO_KEEP_DEPLOYMENT_RECORDS sets how many deployment
// records are kept (unset: deploymgr's default, 10 × VELO_KEEP_DEPLOYMENTS);
// fewer than VELO_KEEP_DEPLOYMENTS is refused with both named, so the
// record of a rollback target is never deleted.
func TestKeepRecords(t *testing.T) {
	for _, c := range []struct {
		keep, records string
		want          int
		err           string
	}{
		{keep: "", records: "", want: 0},
		{keep: "50", records: "", want: 0},
		{keep: "", records: "300", want: 300},
		{keep: "50", records: "50", want: 50},
		{keep: "50", records: "20", err: "VELO_KEEP_DEPLOYMENT_RECORDS=20: want at least VELO_KEEP_DEPLOYMENTS (50)"},
		{keep: "", records: "5", err: "VELO_KEEP_DEPLOYMENT_RECORDS=5: want at least VELO_KEEP_DEPLOYMENTS (10)"},
		{keep: "", records: "many", err: `VELO_KEEP_DEPLOYMENT_RECORDS="many"`},
	} {
		vars := map[string]string{envKeep: c.keep, envKeepRecords: c.records}
		e := &env{get: func(k string) string { return vars[k] }}
		got := e.keepRecords(e.keepDeployments())
		switch {
		case c.err != "" && (e.err == nil || !strings.Contains(e.err.Error(), c.err)):
			t.Errorf("keep %q, records %q: error %v, want one with %q", c.keep, c.records, e.err, c.err)
		case c.err == "" && (e.err != nil || got != c.want):
			t.Errorf("keep %q, records %q: %d, %v; want %d", c.keep, c.records, got, e.err, c.want)
		}
	}
}

// TestKeepRecordsRefusedAtStart: velo up and velo deploymgr refuse to start
// with fewer records kept than artifacts, before they open any store.
func TestKeepRecordsRefusedAtStart(t *testing.T) {
	t.Setenv(envKeep, "50")
	t.Setenv(envKeepRecords, "20")
	t.Setenv(envDatabaseURL, "postgres://127.0.0.1:1/none")
	t.Setenv(envData, t.TempDir())
	for _, cmd := range []func() *cobra.Command{upCmd, deploymgrCmd} {
		c := cmd()
		c.SetArgs(nil)
		c.SilenceUsage, c.SilenceErrors = true, true
		if err := c.Execute(); err == nil || !strings.Contains(err.Error(), envKeepRecords) {
			t.Errorf("velo %s: %v, want the error naming %s", c.Name(), err, envKeepRecords)
		}
	}
}
