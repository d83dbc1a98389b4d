package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

type guards struct{ readings []reconcile.Reading }

func (g *guards) Evaluate(context.Context, *plan.Plan, reconcile.Epoch) ([]reconcile.Reading, error) {
	return append([]reconcile.Reading(nil), g.readings...), nil
}

func healthy() []reconcile.Reading {
	return []reconcile.Reading{{Name: "errors", Health: reconcile.Healthy}, {Name: "health", Health: reconcile.Healthy}}
}

type rig struct {
	d      *Daemon
	clock  *clocktesting.FakeClock
	guards *guards
	fake   *fake.Fake
	store  store.Store
	remote string // the bare repository
	url    string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	base, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	remote := gittest.Bare(t, root, "plans", map[string]string{"plans/shop.yaml": string(base)})
	url := gittest.Daemon(t, root) + "plans.git"
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(t0)
	repo, err := gitops.Open(ctx, gitops.Options{URL: url, Branch: "main", Path: "plans", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	g := &guards{readings: healthy()}
	f := fake.New(fake.WithClock(clk))
	r := &rig{clock: clk, guards: g, fake: f, store: st, remote: remote, url: url}
	r.d = &Daemon{
		Git: repo, Validator: v, Store: st, Plans: st, Clock: clk, Poll: time.Minute, Interval: 30 * time.Second,
		Author: gitops.Signature{Name: "hal9-migrate", Email: "hal9-migrate@example.com"}, Log: testLog(),
		Runner: &reconcile.Runner{Store: st, Open: f.Opener(), Guards: g, Clock: clk, Workers: 2},
	}
	return r
}

// until steps the daemon, moving the clock, until done or n steps.
func (r *rig) until(t *testing.T, n int, done func(store.Record) bool) store.Record {
	t.Helper()
	for range n {
		if err := r.d.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		rec, err := r.store.Load(context.Background(), "base")
		if err != nil {
			t.Fatal(err)
		}
		if done(rec) {
			return rec
		}
		r.clock.Step(15 * time.Minute)
	}
	rec, _ := r.store.Load(context.Background(), "base")
	t.Fatalf("not done after %d steps: %+v", n, rec)
	return rec
}

// person clones the remote, changes the plan file with edit, commits, and
// pushes.
func (r *rig) person(t *testing.T, msg string, edit func(string) string) string {
	t.Helper()
	return r.change(t, edit, func(work string) { gittest.Git(t, work, "commit", "-q", "-am", msg) })
}

// change edits the plan file in a new clone, commits with commit, pushes,
// and returns the commit.
func (r *rig) change(t *testing.T, edit func(string) string, commit func(work string)) string {
	t.Helper()
	work := gittest.Clone(t, r.remote)
	path := filepath.Join(work, "plans", "shop.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gittest.Write(t, path, edit(string(b)))
	commit(work)
	gittest.PushRebasing(t, work)
	return gittest.Git(t, work, "rev-parse", "HEAD")
}

func at(phase string, pct int) func(store.Record) bool {
	return func(rec store.Record) bool {
		return rec.Position == plan.Position{Phase: phase, Percentage: pct} && rec.Pending == nil
	}
}

// TestGitOpsLoop walks a plan forward from Git, breaks a guardrail and
// checks the rollback commit, reverts the target by a person's commit, and
// pushes a broken plan.
func TestGitOpsLoop(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })

	// Status files are committed on transitions.
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	for _, want := range []string{"phase: canary", "percentage: 10", "state: Holding", "kind: MigrationStatus"} {
		if !strings.Contains(st, want) {
			t.Errorf("status file lacks %q:\n%s", want, st)
		}
	}
	statusCommits := gittest.Git(t, r.remote, "rev-list", "--count", "main")
	if err := r.d.Step(ctx); err != nil { // nothing changes: no commit
		t.Fatal(err)
	}
	if n := gittest.Git(t, r.remote, "rev-list", "--count", "main"); n != statusCommits {
		t.Errorf("a step without a transition committed: %s → %s commits", statusCommits, n)
	}

	// A breach rolls back at once and commits the rollback to the plan.
	before := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
	r.guards.readings = []reconcile.Reading{{Name: "errors", Health: reconcile.Breached, Value: 0.12, Bound: "> 0.05 for 5m"},
		{Name: "health", Health: reconcile.Healthy}}
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	rec, _ := r.store.Load(ctx, "base")
	if !at("canary", 5)(rec) || rec.Status != reconcile.StatusRolledBack {
		t.Fatalf("after the breach: %+v", rec)
	}
	if s := r.fake.Driver("base").State(); s.Traffic != 5 {
		t.Errorf("driver after the breach: %+v", s)
	}
	log := gittest.Git(t, r.remote, "log", "--format=%B%x00", "main")
	if !strings.Contains(log, "rollback(base): canary 10% → canary 5%") ||
		!strings.Contains(log, "Guardrail errors was 0.12, over its bound > 0.05 for 5m, at canary 10%.") ||
		!strings.Contains(log, "Hal9-Migrate-Plan: base") {
		t.Errorf("no rollback commit with its reason:\n%s", log)
	}
	after := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
	if diff := changedLines(before, after); len(diff) != 1 || diff[0] != "    percentage: 5" {
		t.Errorf("the rollback commit changed %q, want only the percentage line", diff)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); !strings.Contains(st, "state: RolledBack") {
		t.Errorf("status after the rollback:\n%s", st)
	}

	// The daemon's own commits start no work: healthy again, it stays.
	r.guards.readings = healthy()
	r.clock.Step(5 * time.Hour)
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 5)(rec) {
		t.Fatalf("moved after its own commit: %+v", rec)
	}

	// A person reverts further: the target moves back at once, recorded
	// against that commit.
	revert := r.person(t, "back to shadow", func(s string) string {
		return strings.Replace(s, "    phase: canary\n    percentage: 5\n", "    phase: shadow\n", 1)
	})
	r.d.Wake()
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	rec, _ = r.store.Load(ctx, "base")
	if !at("shadow", 0)(rec) {
		t.Fatalf("after the revert: %+v", rec)
	}
	history, _ := r.store.History(ctx, "base", 0)
	var moved bool
	for _, e := range history {
		if e.Kind == string(reconcile.MoveBack) && e.Commit == revert && strings.HasPrefix(e.Reason, "rollback by commit "+revert[:12]+": target lowered to") {
			moved = true
		}
	}
	if !moved {
		t.Errorf("no MoveBack recorded against %s: %+v", revert, history)
	}

	// A broken plan: the last good one is kept, and the status says so.
	broken := r.person(t, "typo", func(s string) string { return strings.Replace(s, "steps: [5, 10, 25]", "steps: [5, 10, 2]", 1) })
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	st = gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "type: PlanInvalid") || !strings.Contains(st, broken) || !strings.Contains(st, "2 is not greater than previous step 10") {
		t.Errorf("status of a broken plan:\n%s", st)
	}
	if rec, _ := r.store.Load(ctx, "base"); !at("shadow", 0)(rec) {
		t.Errorf("a broken plan moved the migration: %+v", rec)
	}
}

// changedLines returns the lines of b that are not at the same place in a.
func changedLines(a, b string) []string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := range bl {
		if i >= len(al) || al[i] != bl[i] {
			out = append(out, bl[i])
		}
	}
	return out
}

func TestForceRollbackAnnotation(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	base, _ := os.ReadFile("../plan/testdata/base.yaml")
	for _, tc := range []struct {
		annotation string
		force      bool
	}{{"canary 10%", true}, {"shadow 0%", false}, {"", false}} {
		src := string(base)
		if tc.annotation != "" {
			src = strings.Replace(src, "  name: base\n", "  name: base\n  annotations: {migrate.hal9.ai/force-rollback: \""+tc.annotation+"\"}\n", 1)
		}
		p, err := v.ValidateOne(plan.Source{Path: "plans/shop.yaml", Data: []byte(src)})
		if err != nil {
			t.Fatal(err)
		}
		d := &Daemon{Runner: &reconcile.Runner{}}
		d.init()
		d.byFile["plans/shop.yaml"] = followed{plan: p}
		d.rebuildLocked()
		if got := d.snapshot()[0].Force; got != tc.force {
			t.Errorf("annotation %q on target canary 10%%: Force %v, want %v", tc.annotation, got, tc.force)
		}
	}
}

// testLog is the daemon's log in tests: discarded, unless HAL9_TEST_LOG is
// set.
func testLog() *slog.Logger {
	if os.Getenv("HAL9_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
