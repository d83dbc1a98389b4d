package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// rejectingRollbacks is the plan repository with pushes of rollback commits
// failing, as when the branch is protected against the daemon.
type rejectingRollbacks struct {
	Git
	reject bool
}

func (r *rejectingRollbacks) Commit(ctx context.Context, req gitops.CommitRequest) (gitops.Hash, error) {
	if r.reject && req.Trailers[gitops.TrailerAction] == "rollback" {
		return "", errors.New("push refused: protected branch")
	}
	return r.Git.Commit(ctx, req)
}

// TestRollbackNotCommitted: when the rollback commit cannot be pushed, the
// live rollback stands, the status says RollbackNotCommitted, and the
// commit is retried until it lands.
func TestRollbackNotCommitted(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	git := &rejectingRollbacks{Git: r.d.Git, reject: true}
	r.d.Git = git
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })

	r.guards.readings = []reconcile.Reading{{Name: "errors", Health: reconcile.Breached, Value: 0.2, Bound: "> 0.05 for 5m"},
		{Name: "health", Health: reconcile.Healthy}}
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if s := r.fake.Driver("base").State(); s.Traffic != 5 {
		t.Fatalf("the live rollback did not happen: %+v", s)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "type: RollbackNotCommitted") || !strings.Contains(st, "protected branch") {
		t.Errorf("status without RollbackNotCommitted:\n%s", st)
	}
	if plan := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml"); !strings.Contains(plan, "percentage: 10") {
		t.Errorf("the plan changed though the push failed:\n%s", plan)
	}

	// The push works again: the rollback lands and the condition goes.
	git.reject = false
	r.guards.readings = healthy()
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if plan := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml"); !strings.Contains(plan, "percentage: 5") {
		t.Errorf("the rollback was not committed on retry:\n%s", plan)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); strings.Contains(st, "RollbackNotCommitted") {
		t.Errorf("the condition stayed after the commit landed:\n%s", st)
	}
}
