package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// TestStatusBranch: with a status branch, the status files go there (the
// branch created from main on the first commit), and main receives only
// the plans' changes and the daemon's rollbacks.
func TestStatusBranch(t *testing.T) {
	r := newRig(t)
	sr, err := gitops.Open(context.Background(), gitops.Options{URL: r.url, Branch: "hal9-status", CreateFrom: "main", Path: "status", Now: r.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	r.d.StatusGit = sr
	r.holdingAt10(t)
	if log := gittest.Git(t, r.remote, "log", "--format=%s", "main"); strings.Contains(log, "status:") {
		t.Errorf("status commits on main:\n%s", log)
	}
	st := gittest.Git(t, r.remote, "show", "hal9-status:status/base.yaml")
	if !strings.Contains(st, "percentage: 10") {
		t.Errorf("the status branch's status file:\n%s", st)
	}

	r.breach()
	r.steps(t, 1)
	if log := gittest.Git(t, r.remote, "log", "-1", "--format=%s", "main"); !strings.HasPrefix(log, "rollback(base): canary 10% → canary 5%") {
		t.Errorf("the rollback is not on main: %s", log)
	}
	if st := gittest.Git(t, r.remote, "show", "hal9-status:status/base.yaml"); !strings.Contains(st, "state: RolledBack") {
		t.Errorf("the status branch does not say RolledBack:\n%s", st)
	}
	r.guards.readings = healthy()
	r.until(t, 10, func(rec store.Record) bool { return rec.Status == reconcile.StatusRolledBack })
}
