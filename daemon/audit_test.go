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
