package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// signed is person with the commit signed by key.
func (r *rig) signed(t *testing.T, key gittest.Key, msg string, edit func(string) string) string {
	t.Helper()
	return r.change(t, edit, func(work string) { key.Git(t, work, "commit", "-q", "-S", "-am", msg) })
}

// gated makes the rig's daemon read the repository with a trusted key and
// hold unsigned advances, and returns the key.
func (r *rig) gated(t *testing.T) gittest.Key {
	t.Helper()
	key := gittest.NewKey(t, "Tester", "t@example.com")
	repo, err := gitops.Open(context.Background(), gitops.Options{URL: r.url, Branch: "main", Path: "plans", Now: r.clock.Now, TrustedKeys: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	r.d.Git = repo
	r.d.RequireSigned = true
	return key
}

// restart replaces the rig's daemon by a new one over the same store,
// reading git through repo, as a restarted process would.
func (r *rig) restart(repo Git) {
	old := r.d
	r.d = &Daemon{Git: repo, Validator: old.Validator, Store: old.Store, Plans: old.Plans, Clock: old.Clock, Poll: old.Poll, Interval: old.Interval,
		Author: old.Author, RequireSigned: old.RequireSigned, Log: old.Log,
		Runner: &reconcile.Runner{Store: r.store, Open: r.fake.Opener(), Guards: r.guards, Clock: r.clock, Workers: 2}}
}

// steps runs n daemon steps half an hour apart.
func (r *rig) steps(t *testing.T, n int) {
	t.Helper()
	for range n {
		if err := r.d.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		r.clock.Step(30 * time.Minute)
	}
}

// unsignedUnderSigned pushes, in one push, an unsigned commit that moves
// the target from one percentage to another and a signed commit on top that
// changes something else, and returns the unsigned commit's short id.
func (r *rig) unsignedUnderSigned(t *testing.T, key gittest.Key, from, to string) string {
	t.Helper()
	work := gittest.Clone(t, r.remote)
	plan := filepath.Join(work, "plans", "shop.yaml")
	b, err := os.ReadFile(plan)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "percentage: "+from+"\n") {
		t.Fatalf("the plan is not at %s%%:\n%s", from, b)
	}
	gittest.Write(t, plan, target(from, to)(string(b)))
	gittest.Git(t, work, "commit", "-q", "-am", "go to "+to+", unsigned")
	below := gittest.Git(t, work, "rev-parse", "--short=12", "HEAD")
	gittest.Write(t, filepath.Join(work, "plans", "README.md"), "signed on top of "+below+"\n")
	gittest.Git(t, work, "add", "plans/README.md")
	key.Git(t, work, "commit", "-q", "-S", "-m", "docs, signed")
	gittest.Git(t, work, "push", "-q", "origin", "HEAD:main")
	return below
}

func target(from, to string) func(string) string {
	return func(s string) string {
		return strings.Replace(s, "    phase: canary\n    percentage: "+from+"\n", "    phase: canary\n    percentage: "+to+"\n", 1)
	}
}

// TestSignatureGate checks that with trusted keys an unsigned commit cannot
// advance a target, while it can lower one, and a signed one can advance.
func TestSignatureGate(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	key := r.gated(t)

	// The first plans the daemon sees are signed (the rig's first commit
	// is not: a new plan beyond start is an advance).
	r.signed(t, key, "flags", func(s string) string { return strings.Replace(s, "new_cart: 10", "new_cart: 20", 1) })
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })

	// An unsigned advance is not followed, however long the daemon runs.
	unsigned := r.person(t, "go to 25", target("10", "25"))
	r.steps(t, 20)
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 10)(rec) {
		t.Fatalf("an unsigned advance moved the migration: %+v", rec)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "type: ChangeNotSigned") || !strings.Contains(st, unsigned) ||
		!strings.Contains(st, "moves the target forward to canary 25% without a trusted signature (unsigned); keeping canary 10%") {
		t.Errorf("status of an unsigned advance:\n%s", st)
	}

	// A restarted daemon follows the last signed version, which the store
	// kept.
	r.restart(r.d.Git)
	r.steps(t, 10)
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 10)(rec) {
		t.Fatalf("an unsigned advance moved the migration after a restart: %+v", rec)
	}
	if ds := r.d.snapshot(); len(ds) != 1 || ds[0].Target.String() != "canary 10%" {
		t.Fatalf("after a restart the plan is not followed at its last signed version: %+v", ds)
	}

	// An unsigned rollback is followed at once.
	r.person(t, "back to 5", target("25", "5"))
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 5)(rec) {
		t.Fatalf("an unsigned rollback was not followed: %+v", rec)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); strings.Contains(st, "ChangeNotSigned") {
		t.Errorf("the condition outlived the rollback:\n%s", st)
	}

	// A signed advance is followed.
	r.signed(t, key, "go to 25, signed", target("5", "25"))
	r.until(t, 100, at("canary", 25))

	// A signed advance on which the daemon's own commit lands before the
	// daemon syncs again is followed: the head is then the daemon's
	// unsigned commit, and the signature that counts is the one below it.
	r.person(t, "back to 10", target("25", "10"))
	r.until(t, 10, at("canary", 10))
	r.signed(t, key, "go to 25 again, signed", target("10", "25"))
	if _, err := r.d.Git.Commit(ctx, gitops.CommitRequest{Message: "status: a transition", Author: r.d.Author,
		Changes: func(func(string) ([]byte, error)) (map[string][]byte, error) {
			return map[string][]byte{"status/other.yaml": []byte("kind: MigrationStatus\n")}, nil
		}}); err != nil {
		t.Fatal(err)
	}
	r.until(t, 100, at("canary", 25))
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); strings.Contains(st, "ChangeNotSigned") {
		t.Errorf("a signed advance under the daemon's own commit was held:\n%s", st)
	}

	// One push of two commits: an unsigned advance under a signed commit
	// that changes something else. The advance is held, and the status
	// names the unsigned commit.
	r.person(t, "back to 10", target("25", "10"))
	r.until(t, 10, at("canary", 10))
	below := r.unsignedUnderSigned(t, key, "10", "25")
	r.steps(t, 10)
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 10)(rec) {
		t.Fatalf("an unsigned advance under a signed commit moved the migration: %+v", rec)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); !strings.Contains(st, "type: ChangeNotSigned") ||
		!strings.Contains(st, "moves the target forward to canary 25% without a trusted signature (commit "+below+" below it: unsigned); keeping canary 10%") {
		t.Errorf("status of an unsigned advance under a signed commit:\n%s", st)
	}

	// The same push made while the daemon is down: the restarted daemon
	// judges every commit since the one it acted on last, not only the
	// signed head.
	r.person(t, "back to 5", target("25", "5"))
	r.until(t, 10, at("canary", 5))
	below = r.unsignedUnderSigned(t, key, "5", "25")
	restarted, err := gitops.Open(ctx, gitops.Options{URL: r.url, Branch: "main", Path: "plans", Now: r.clock.Now, TrustedKeys: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	r.restart(restarted)
	r.steps(t, 10)
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 5)(rec) {
		t.Fatalf("an unsigned advance pushed while the daemon was down moved the migration: %+v", rec)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); !strings.Contains(st, "commit "+below+" below it: unsigned") {
		t.Errorf("status after a restart over an unsigned advance:\n%s", st)
	}
}

// TestSignedPlans checks that with trusted keys every change to a plan
// needs a signature: an unsigned commit that keeps the target but loosens a
// guardrail, points its health check elsewhere, swaps the candidate or
// changes a job's image is not followed, and the status names the commit and
// the fields; a lowered target in the same commit is followed at once, the
// rest still kept back; a restarted daemon keeps the last signed version,
// which the store kept; a signed commit is followed.
func TestSignedPlans(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	key := r.gated(t)
	r.signed(t, key, "flags", func(s string) string { return strings.Replace(s, "new_cart: 10", "new_cart: 20", 1) })
	r.holdingAt10(t)

	loosen := func(s string) string {
		for _, e := range [][2]string{
			{"max: 0.05", "max: 1000000"},
			{"http: {url: 'http://shop-v2/health'}", "http: {url: 'http://attacker.example/ok'}"},
			{"candidate: {deployment: shop-v2}", "candidate: {deployment: someone-else}"},
			{"run: {image: \"migrator:1\", timeout: 30m}", "run: {image: \"evil:1\", timeout: 30m}"},
		} {
			s = strings.Replace(s, e[0], e[1], 1)
		}
		return s
	}
	followed := func() *reconcile.Desired {
		t.Helper()
		ds := r.d.snapshot()
		if len(ds) != 1 {
			t.Fatalf("following %d plans", len(ds))
		}
		return ds[0]
	}
	signedVersion := func(what string) {
		t.Helper()
		p := followed().Plan
		if g := p.Spec.Guardrails[0]; *g.Max != 0.05 || p.Spec.Guardrails[1].HTTP.URL != "http://shop-v2/health" ||
			p.Spec.Driver.Kubernetes.Candidate.Deployment != "shop-v2" || p.Spec.Phases[2].Run.Image != "migrator:1" {
			t.Fatalf("%s: an unsigned change is followed: %+v", what, p.Spec)
		}
	}

	unsigned := r.person(t, "loosen everything", loosen)
	r.steps(t, 3)
	signedVersion("an unsigned change")
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	for _, want := range []string{"type: ChangeNotSigned", "commit: " + unsigned, "spec.driver.kubernetes.candidate.deployment",
		"spec.guardrails.0.max", "spec.guardrails.1.http.url", "spec.phases.2.run.image", "following the last signed version"} {
		if !strings.Contains(st, want) {
			t.Errorf("status of an unsigned change lacks %q:\n%s", want, st)
		}
	}

	// The same, with the target lowered: the rollback is followed at once,
	// the rest is not.
	r.person(t, "back to 5, and loosen", func(s string) string { return target("10", "5")(loosen(s)) })
	r.steps(t, 1)
	if rec, _ := r.store.Load(ctx, "base"); !at("canary", 5)(rec) {
		t.Fatalf("a lowered target waited for a signature: %+v", rec)
	}
	signedVersion("an unsigned change with a lowered target")
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); !strings.Contains(st, "with the lowered target canary 5%") {
		t.Errorf("status:\n%s", st)
	}

	// A restart keeps the last signed version, with the lowered target.
	r.restart(r.d.Git)
	r.steps(t, 2)
	signedVersion("after a restart")
	if got := followed().Target.String(); got != "canary 5%" {
		t.Errorf("after a restart the target is %s, want canary 5%%", got)
	}

	// A signed commit is followed, all of it.
	r.signed(t, key, "loosen, signed", func(s string) string { return strings.Replace(s, "new_cart: 20", "new_cart: 21", 1) })
	r.steps(t, 1)
	if p := followed().Plan; *p.Spec.Guardrails[0].Max != 1000000 {
		t.Errorf("a signed commit is not followed: %+v", p.Spec.Guardrails[0])
	}
}
