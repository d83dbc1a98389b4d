package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	planpkg "github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// promoting adds spec.promotion to the rig's plan.
func promoting(policy string) func(string) string {
	return func(s string) string { return strings.Replace(s, "spec:\n", "spec:\n  promotion: "+policy+"\n", 1) }
}

// TestAutoPromotionSigned: under signed mode an auto promotion needs the
// daemon's own signing key. Without it the plan holds at its target and
// its status says PromotionRefused; with it the daemon commits the next
// target, signed, follows it through its own gate and moves on.
func TestAutoPromotionSigned(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	key := r.gated(t)
	r.signed(t, key, "promote on its own", promoting("auto"))
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
	r.steps(t, 6) // past canary 10%'s soak
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 10)(rec) {
		t.Fatalf("moved without a promotion: %+v", rec)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "type: PromotionRefused") || !strings.Contains(st, "git.signingKeyFile") {
		t.Fatalf("status of a refused promotion:\n%s", st)
	}
	if log := gittest.Git(t, r.remote, "log", "--format=%s", "main"); strings.Contains(log, "promote(") {
		t.Fatalf("a promotion was committed without a signing key:\n%s", log)
	}

	// With a signing key among the trusted ones the daemon promotes: all
	// its commits are signed (a daemon that had made unsigned ones before
	// its key was configured would hold its own gate on them).
	r = newRig(t)
	r.gated(t)
	self := gittest.NewKey(t, "hal9-migrate", "hal9-migrate@example.com")
	repo, err := gitops.Open(ctx, gitops.Options{URL: r.url, Branch: "main", Path: "plans", Now: r.clock.Now,
		TrustedKeys: key.Public + self.Public, SigningKey: self.Secret})
	if err != nil {
		t.Fatal(err)
	}
	r.d.Git = repo
	r.signed(t, key, "promote on its own", promoting("auto"))
	rec := r.until(t, 100, at("canary", 25))
	if rec.Commit == "" {
		t.Fatalf("record: %+v", rec)
	}
	msg := gittest.Git(t, r.remote, "log", "--format=%B", "-1", "--grep=^promote(", "main")
	if !strings.HasPrefix(msg, "promote(base): base canary 10% → canary") || !strings.Contains(msg, "Hal9-Migrate-Action: promote") {
		t.Errorf("promotion commit:\n%s", msg)
	}
	commit := gittest.Git(t, r.remote, "log", "--format=%H", "-1", "--grep=^promote(", "main")
	if out := self.Git(t, gittest.Clone(t, r.remote), "verify-commit", "--raw", commit); !strings.Contains(out, "GOODSIG") && out != "" {
		t.Errorf("the promotion is not signed by the daemon's key: %s", out)
	}
	if plan := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml"); !strings.Contains(plan, "phase: canary\n") || strings.Contains(plan, "percentage: 10") {
		t.Errorf("the plan's target after the promotion:\n%s", plan)
	}
}

// TestPullRequestPromotion: promotion: pull-request pushes the move on a
// branch of its own, once, and leaves the tracked branch and the migration
// where they are; the status names the branch.
func TestPullRequestPromotion(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	var opened []string
	r.d.Propose = func(ctx context.Context, branch string) (Git, error) {
		opened = append(opened, branch)
		return gitops.Open(ctx, gitops.Options{URL: r.url, Branch: branch, CreateFrom: "main", Path: "plans", Now: r.clock.Now})
	}
	r.person(t, "propose promotions", promoting("pull-request"))
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
	r.steps(t, 8)
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 10)(rec) {
		t.Fatalf("moved without the pull request merged: %+v", rec)
	}
	const branch = "hal9-migrate/promote/base-canary"
	if len(opened) != 1 || opened[0] != branch {
		t.Fatalf("branches opened: %v, want one, %s", opened, branch)
	}
	proposed := gittest.Git(t, r.remote, "show", branch+":plans/shop.yaml")
	if strings.Contains(proposed, "percentage: 10") || !strings.Contains(proposed, "promotion: pull-request") {
		t.Errorf("the proposed plan:\n%s", proposed)
	}
	if main := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml"); !strings.Contains(main, "percentage: 10") {
		t.Errorf("the tracked branch moved:\n%s", main)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "type: PromotionProposed") || !strings.Contains(st, branch) {
		t.Errorf("status of a proposed promotion:\n%s", st)
	}
	// A person merges it: the migration moves on.
	gittest.Git(t, r.remote, "update-ref", "refs/heads/main", branch)
	r.until(t, 100, at("canary", 25))
}

// TestGateAcrossDaemons: two daemons share the plan repository, each
// following its own folder and committing status files; a gate on the
// other daemon's plan reads that plan's status file, its climb and since
// when it has held the position, and opens only once it has held it for
// the gate's time.
func TestGateAcrossDaemons(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	plan := func(name, extra string) string {
		return `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: ` + name + `}
spec:
` + extra + `
  target: {phase: full}
  driver: {kubernetes: {stable: {deployment: ` + name + `-v1}, candidate: {deployment: ` + name + `-v2}}}
  phases:
    - {name: canary, steps: [10, 50], soak: 10m}
    - {name: full, steps: [100]}
`
	}
	remote := gittest.Bare(t, root, "plans", map[string]string{
		"plans/staging/checkout.yaml": plan("checkout-staging", ""),
		"plans/prod/checkout.yaml":    plan("checkout-prod", "  after: [{plan: checkout-staging, reached: full, for: 1h}]"),
	})
	url := gittest.Daemon(t, root) + "plans.git"
	clk := clocktesting.NewFakeClock(t0)
	v, err := planpkg.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	daemonFor := func(path string) (*Daemon, store.Store) {
		repo, err := gitops.Open(ctx, gitops.Options{URL: url, Branch: "main", Path: path, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f := fake.New(fake.WithClock(clk))
		return &Daemon{Git: repo, Validator: v, Store: st, Plans: st, Clock: clk, Poll: time.Minute, Interval: 30 * time.Second,
			Author: gitops.Signature{Name: "hal9-migrate", Email: "hal9-migrate@example.com"}, Log: testLog(),
			Runner: &reconcile.Runner{Store: st, Open: f.Opener(), Guards: &guards{}, Clock: clk, Workers: 2}}, st
	}
	staging, stagingStore := daemonFor("plans/staging")
	prod, prodStore := daemonFor("plans/prod")
	step := func() {
		t.Helper()
		for _, d := range []*Daemon{staging, prod} {
			if err := d.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	var fullAt time.Time
	for range 40 {
		step()
		s, _ := stagingStore.Load(ctx, "checkout-staging")
		p, _ := prodStore.Load(ctx, "checkout-prod")
		if !p.Position.IsStart() && fullAt.IsZero() {
			t.Fatalf("production left start before staging reached full: staging at %s", s.Position)
		}
		if s.Position.Phase == "full" && fullAt.IsZero() {
			fullAt = s.EnteredAt
		}
		if !p.Position.IsStart() {
			if clk.Now().Before(fullAt.Add(time.Hour)) {
				t.Fatalf("production left start at %s, staging reached full at %s: the gate asks for an hour", clk.Now(), fullAt)
			}
			t.Logf("staging reached full at %s; production left start at %s", fullAt.Format(time.TimeOnly), p.EnteredAt.Format(time.TimeOnly))
			st := gittest.Git(t, remote, "show", "main:status/checkout-staging.yaml")
			if !strings.Contains(st, "reached:") {
				t.Errorf("staging's status file has no climb:\n%s", st)
			}
			return
		}
		if !fullAt.IsZero() {
			// Production waits, saying on what, in its status file too.
			if st := gittest.Git(t, remote, "show", "main:status/checkout-prod.yaml"); !strings.Contains(st, "waiting for checkout-staging at full for 1h") {
				t.Fatalf("production's status while it waits:\n%s", st)
			}
		}
		clk.Step(15 * time.Minute)
	}
	t.Fatal("production never started")
}

// TestPullRequestOpenedAgain: the forge refuses to open a promotion's pull
// request twice; the branch is pushed once, the status says the request
// could not be opened and when it is tried again, and the Git loop tries
// again after StatusInterval, then twice as long, until it opens.
func TestPullRequestOpenedAgain(t *testing.T) {
	r := newRig(t)
	var tried []time.Time
	r.d.Propose = func(ctx context.Context, branch string) (Git, error) {
		return gitops.Open(ctx, gitops.Options{URL: r.url, Branch: branch, CreateFrom: "main", Path: "plans", Now: r.clock.Now})
	}
	r.d.OpenPullRequest = func(ctx context.Context, pr PullRequest) (string, error) {
		tried = append(tried, r.clock.Now())
		if len(tried) <= 2 {
			return "", errors.New("502 Bad Gateway")
		}
		return "https://forge.example.com/shop/pulls/7", nil
	}
	r.person(t, "propose promotions", promoting("pull-request"))
	r.until(t, 100, func(rec store.Record) bool { return len(tried) > 0 })
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "could not be opened (tried 1 of 6 times, again in 1m0s): 502 Bad Gateway") {
		t.Fatalf("status after the first try:\n%s", st)
	}
	for range 40 {
		if len(tried) == 3 {
			break
		}
		if err := r.d.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.clock.Step(10 * time.Second)
	}
	if len(tried) != 3 {
		t.Fatalf("tried %d times, want 3", len(tried))
	}
	if gap1, gap2 := tried[1].Sub(tried[0]), tried[2].Sub(tried[1]); gap1 < time.Minute || gap2 < 2*time.Minute || gap2 > 3*time.Minute {
		t.Errorf("tried again after %s, then %s; want one minute, then two", gap1, gap2)
	}
	r.steps(t, 1)
	st = gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "merge it to promote; pull request https://forge.example.com/shop/pulls/7") || strings.Contains(st, "could not be opened") {
		t.Fatalf("status once opened:\n%s", st)
	}
}
