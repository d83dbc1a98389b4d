package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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

// TestStatusWaitsForItsRollback: a status file saying RolledBack never
// reaches Git before the commit of its rollback. The runner records a
// rollback before handing it over for its commit (a group's members are
// rolled back in turn, and handed over once the last is done); a status
// commit in between keeps the plan's old status. Once the rollback is
// committed and read back, the status follows it. A failed try, or
// statusHold without a hand-over, lets the status go all the same.
func TestStatusWaitsForItsRollback(t *testing.T) {
	ctx := context.Background()
	statusOf := func(t *testing.T, r *rig) string {
		t.Helper()
		return gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	}
	// breach rolls the plan back from canary 10% with the hand-over held
	// back, and returns what to call to hand it over.
	breach := func(t *testing.T, r *rig) (handOver func()) {
		t.Helper()
		var held func()
		r.d.Runner.OnRollback = func(ctx context.Context, ds *reconcile.Desired, a reconcile.Action) {
			held = func() { r.d.onRollback(ctx, ds, a) }
		}
		r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
		if st := statusOf(t, r); !strings.Contains(st, "state: Holding") {
			t.Fatalf("status before the breach:\n%s", st)
		}
		r.guards.readings = []reconcile.Reading{{Name: "errors", Health: reconcile.Breached, Value: 0.2, Bound: "> 0.05 for 5m"},
			{Name: "health", Health: reconcile.Healthy}}
		r.d.cycle(ctx, nil, r.clock.Now())
		if rec, err := r.store.Load(ctx, "base"); err != nil || rec.Status != reconcile.StatusRolledBack || held == nil {
			t.Fatalf("not rolled back: %+v, %v", rec, err)
		}
		return held
	}
	commitStatus := func(t *testing.T, r *rig) {
		t.Helper()
		if err := r.d.commitStatus(ctx, false); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("after its rollback's commit", func(t *testing.T) {
		r := newRig(t)
		handOver := breach(t, r)
		commitStatus(t, r)
		if st := statusOf(t, r); strings.Contains(st, "RolledBack") {
			t.Fatalf("the status went before the rollback was handed over:\n%s", st)
		}
		handOver()
		commitStatus(t, r) // the rollback is owed, not tried: still waiting
		if st := statusOf(t, r); strings.Contains(st, "RolledBack") {
			t.Fatalf("the status went before the rollback's commit was tried:\n%s", st)
		}
		r.d.commitRollbacks(ctx)
		r.d.syncNow(ctx)
		commitStatus(t, r)
		if st := statusOf(t, r); !strings.Contains(st, "state: RolledBack") {
			t.Fatalf("the status did not follow the rollback's commit:\n%s", st)
		}
		// Newest first: the status commit, then the rollback's.
		log := gittest.Git(t, r.remote, "log", "-2", "--format=%s", "main")
		subjects := strings.Split(strings.TrimSpace(log), "\n")
		if len(subjects) != 2 || !strings.HasPrefix(subjects[1], "rollback(") || strings.HasPrefix(subjects[0], "rollback(") {
			t.Errorf("want the rollback's commit, then the status commit:\n%s", log)
		}
	})

	t.Run("a failed try lets it go", func(t *testing.T) {
		r := newRig(t)
		git := &rejectingRollbacks{Git: r.d.Git, reject: true}
		r.d.Git = git
		handOver := breach(t, r)
		handOver()
		r.d.commitRollbacks(ctx)
		commitStatus(t, r)
		if st := statusOf(t, r); !strings.Contains(st, "state: RolledBack") || !strings.Contains(st, "type: RollbackNotCommitted") {
			t.Fatalf("the status after a failed try:\n%s", st)
		}
	})

	t.Run("not for ever", func(t *testing.T) {
		r := newRig(t)
		breach(t, r) // never handed over
		commitStatus(t, r)
		r.clock.Step(statusHold - time.Second)
		commitStatus(t, r)
		if st := statusOf(t, r); strings.Contains(st, "RolledBack") {
			t.Fatalf("the status went before statusHold:\n%s", st)
		}
		r.clock.Step(time.Second)
		commitStatus(t, r)
		if st := statusOf(t, r); !strings.Contains(st, "state: RolledBack") {
			t.Fatalf("the status still waits after statusHold:\n%s", st)
		}
	})
}
