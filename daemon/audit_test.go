package daemon

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// The tests in this file follow a new user through scenarios of the GitOps
// loop against a real `git daemon`: files moved, removed, broken, edited by
// hand, and people pushing while the daemon commits.

// commitFiles makes one commit in a new clone of the remote: files maps
// paths to their new content, "" removing the file; it pushes and returns
// the commit.
func (r *rig) commitFiles(t *testing.T, msg string, files map[string]string) string {
	t.Helper()
	work := gittest.Clone(t, r.remote)
	for p, content := range files {
		if content == "" {
			gittest.Git(t, work, "rm", "-q", p)
			continue
		}
		gittest.Write(t, filepath.Join(work, p), content)
		gittest.Git(t, work, "add", p)
	}
	gittest.Git(t, work, "commit", "-q", "-m", msg)
	gittest.PushRebasing(t, work)
	return gittest.Git(t, work, "rev-parse", "HEAD")
}

// commits counts the commits of the remote's main.
func (r *rig) commits(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(gittest.Git(t, r.remote, "rev-list", "--count", "main"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// breach makes the errors guardrail breached.
func (r *rig) breach() {
	r.guards.readings = []reconcile.Reading{{Name: "errors", Health: reconcile.Breached, Value: 0.3, Bound: "> 0.05 for 5m"},
		{Name: "health", Health: reconcile.Healthy}}
}

func (r *rig) holdingAt10(t *testing.T) {
	t.Helper()
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
}

func (r *rig) load(t *testing.T) store.Record {
	t.Helper()
	rec, err := r.store.Load(context.Background(), "base")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestAuditInvalidPlanSettles: a broken plan is reported once. The status
// names the person's commit that broke it, and the daemon's status commit
// is not itself a reason for another one: without that, every step named
// the daemon's previous status commit and committed again, for ever.
func TestAuditInvalidPlanSettles(t *testing.T) {
	r := newRig(t)
	r.holdingAt10(t)
	broken := r.person(t, "typo", func(s string) string { return strings.Replace(s, "steps: [5, 10, 25]", "steps: [5, 10, 2]", 1) })
	r.steps(t, 1)
	after := r.commits(t)
	r.steps(t, 5)
	if n := r.commits(t); n != after {
		t.Errorf("the daemon went on committing while nothing happened: %d commits, then %d", after, n)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "commit: "+broken) || !strings.Contains(st, "invalid at "+broken[:12]) {
		t.Errorf("the PlanInvalid condition does not name the breaking commit %s:\n%s", broken, st)
	}
	if rec := r.load(t); !at("canary", 10)(rec) {
		t.Errorf("a broken plan moved the migration: %+v", rec)
	}
}

// TestAuditUnsignedAdvanceSettles: an advance held for want of a signature
// is reported once, against the person's commit, not against each of the
// daemon's status commits on top of it.
func TestAuditUnsignedAdvanceSettles(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	key := gittest.NewKey(t, "Tester", "t@example.com")
	repo, err := gitops.Open(ctx, gitops.Options{URL: r.url, Branch: "main", Path: "plans", Now: r.clock.Now, TrustedKeys: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	r.d.Git = repo
	r.d.RequireSignedAdvance = true
	r.signed(t, key, "flags", func(s string) string { return strings.Replace(s, "new_cart: 10", "new_cart: 20", 1) })
	r.holdingAt10(t)

	unsigned := r.person(t, "go to 25", target("10", "25"))
	r.steps(t, 1)
	after := r.commits(t)
	r.steps(t, 5)
	if n := r.commits(t); n != after {
		t.Errorf("the daemon went on committing while nothing happened: %d commits, then %d", after, n)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "commit "+unsigned[:12]+" moves the target forward") {
		t.Errorf("the AdvanceNotSigned condition does not name the unsigned commit %s:\n%s", unsigned, st)
	}
}

// racing is the plan repository with a person's push landing just before
// the daemon pushes its next rollback commit.
type racing struct {
	Git
	before func()
}

func (r *racing) Commit(ctx context.Context, req gitops.CommitRequest) (gitops.Hash, error) {
	if r.before != nil && req.Trailers["Hal9-Migrate-Action"] == "rollback" {
		r.before()
		r.before = nil
	}
	return r.Git.Commit(ctx, req)
}

// TestAuditRollbackRacesPerson: a person's commit reaches the branch
// between the breach and the daemon's rollback commit.
func TestAuditRollbackRacesPerson(t *testing.T) {
	t.Run("target", func(t *testing.T) {
		// The person moved the target: the rollback commit must not
		// overwrite it (raising a lowered target, or dropping an
		// advance); the rollback stays recorded in the status.
		for _, to := range []string{"    phase: canary\n    percentage: 25\n", "    phase: shadow\n"} {
			r := newRig(t)
			git := &racing{Git: r.d.Git}
			r.d.Git = git
			r.holdingAt10(t)
			var person string
			git.before = func() {
				person = r.person(t, "move the target", func(s string) string {
					return strings.Replace(s, "    phase: canary\n    percentage: 10\n", to, 1)
				})
			}
			r.breach()
			r.steps(t, 1)
			plan := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
			if !strings.Contains(plan, to) {
				t.Errorf("the person's target %q of %s was overwritten by the rollback:\n%s", to, person[:12], plan)
			}
			st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
			if !strings.Contains(st, "action: Rollback") || !strings.Contains(st, "from: canary 10%") || strings.Contains(st, "RollbackNotCommitted") {
				t.Errorf("the rollback is not in the status, or is reported as not committed:\n%s", st)
			}
		}
	})
	t.Run("features", func(t *testing.T) {
		// The person changed something else: the rollback lands on top
		// of it and keeps it.
		r := newRig(t)
		git := &racing{Git: r.d.Git}
		r.d.Git = git
		r.holdingAt10(t)
		git.before = func() {
			r.person(t, "flags", func(s string) string { return strings.Replace(s, "new_cart: 10", "new_cart: 30", 1) })
		}
		r.breach()
		r.steps(t, 1)
		plan := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
		if !strings.Contains(plan, "new_cart: 30") || !strings.Contains(plan, "    phase: canary\n    percentage: 5\n") {
			t.Errorf("want the person's flag and the rollback's target:\n%s", plan)
		}
		if log := gittest.Git(t, r.remote, "log", "-1", "--format=%B", "main", "--", "plans/shop.yaml"); !strings.Contains(log, "rollback(base): canary 10% → canary 5%") {
			t.Errorf("the plan's last commit is not the rollback:\n%s", log)
		}
	})
}

// TestAuditTwoRollbacksQueued: two rollbacks of one plan wait while pushes
// are refused; when pushes work again both land, in order, and the plan
// file ends at the second one's target.
func TestAuditTwoRollbacksQueued(t *testing.T) {
	r := newRig(t)
	git := &rejectingRollbacks{Git: r.d.Git, reject: true}
	r.d.Git = git
	r.holdingAt10(t)
	r.breach()
	r.steps(t, 2)
	if rec := r.load(t); !at("shadow", 0)(rec) {
		t.Fatalf("want two rollbacks, to shadow: %+v", rec)
	}
	git.reject = false
	r.guards.readings = healthy()
	r.steps(t, 1)
	plan := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
	if !strings.Contains(plan, "  target:\n    phase: shadow\n  driver:") {
		t.Errorf("the plan does not say shadow after both rollbacks landed:\n%s", plan)
	}
	log := gittest.Git(t, r.remote, "log", "--format=%s", "main", "--", "plans/shop.yaml")
	if !strings.Contains(log, "rollback(base): canary 5% → shadow 0%\nrollback(base): canary 10% → canary 5%") {
		t.Errorf("the rollbacks are not both committed, in order:\n%s", log)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); strings.Contains(st, "RollbackNotCommitted") {
		t.Errorf("the condition stayed after the commits landed:\n%s", st)
	}
}

// TestAuditRollbackOfMovedPlan: a rollback waits for pushes while a person
// moves the plan file to another folder under the plans path; it lands in
// the file where the plan now is. A person who removes the plan file drops
// the rollback's commit with it: there is no target left to lower.
func TestAuditRollbackOfMovedPlan(t *testing.T) {
	for _, move := range []string{"plans/team/shop.yaml", ""} {
		r := newRig(t)
		git := &rejectingRollbacks{Git: r.d.Git, reject: true}
		r.d.Git = git
		r.holdingAt10(t)
		r.breach()
		r.steps(t, 1)
		old := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
		files := map[string]string{"plans/shop.yaml": ""}
		if move != "" {
			files[move] = old
		}
		r.commitFiles(t, "move or remove the plan", files)
		git.reject = false
		r.guards.readings = healthy()
		r.steps(t, 2)
		if n := len(r.d.rollbacks); n != 0 {
			t.Errorf("after %q: %d rollbacks still pending: %v", move, n, r.d.rollbacks[0].err)
		}
		if move == "" {
			continue
		}
		if plan := gittest.Git(t, r.remote, "show", "main:"+move); !strings.Contains(plan, "    phase: canary\n    percentage: 5\n") {
			t.Errorf("the rollback did not land in the moved file:\n%s", plan)
		}
		if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); strings.Contains(st, "RollbackNotCommitted") {
			t.Errorf("the condition stayed:\n%s", st)
		}
	}
}
