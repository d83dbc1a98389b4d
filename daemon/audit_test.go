package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
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

// settles runs a step, then five more, and checks that the five committed
// nothing: nothing happened in them.
func (r *rig) settles(t *testing.T) {
	t.Helper()
	r.steps(t, 1)
	after := r.commits(t)
	r.steps(t, 5)
	if n := r.commits(t); n != after {
		t.Errorf("the daemon went on committing while nothing happened: %d commits, then %d", after, n)
	}
}

// TestAuditInvalidPlanSettles: a broken plan is reported once. The status
// names the person's commit that broke it, and the daemon's status commit
// is not itself a reason for another one: without that, every step named
// the daemon's previous status commit and committed again, for ever.
func TestAuditInvalidPlanSettles(t *testing.T) {
	r := newRig(t)
	r.holdingAt10(t)
	broken := r.person(t, "typo", func(s string) string { return strings.Replace(s, "steps: [5, 10, 25]", "steps: [5, 10, 2]", 1) })
	r.settles(t)
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
	key := r.gated(t)
	r.signed(t, key, "flags", func(s string) string { return strings.Replace(s, "new_cart: 10", "new_cart: 20", 1) })
	r.holdingAt10(t)

	unsigned := r.person(t, "go to 25", target("10", "25"))
	r.settles(t)
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "commit "+unsigned[:12]+" moves the target forward") {
		t.Errorf("the ChangeNotSigned condition does not name the unsigned commit %s:\n%s", unsigned, st)
	}
}

// racing is the plan repository with a person's push landing just before
// the daemon pushes its next rollback commit.
type racing struct {
	Git
	before func()
}

func (r *racing) Commit(ctx context.Context, req gitops.CommitRequest) (gitops.Hash, error) {
	if r.before != nil && req.Trailers[gitops.TrailerAction] == "rollback" {
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
// are refused; when pushes work again they land in one commit that tells
// both, in order, and the plan file ends at the second one's target.
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
	log := gittest.Git(t, r.remote, "log", "-1", "--format=%B", "main", "--", "plans/shop.yaml")
	if !strings.Contains(log, "rollback(base): canary 10% → shadow 0%\n") ||
		!regexp.MustCompile(`(?s)at canary 10%\.\n.*at canary 5%\.\n`).MatchString(log) {
		t.Errorf("the rollbacks are not both told, in order, in one commit:\n%s", log)
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
			t.Errorf("after %q: %d rollbacks still pending: %+v", move, n, r.d.rollbacks)
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

// TestAuditPeopleAndHistory: a status file edited by hand is written again
// at the next step; a `git revert` of the daemon's rollback commit is a
// person's newer decision and moves the migration forward again; a
// force-push that rewrites the branch is followed, and the daemon's next
// commit lands on it as a fast-forward.
func TestAuditPeopleAndHistory(t *testing.T) {
	r := newRig(t)
	r.holdingAt10(t)

	r.commitFiles(t, "status by hand", map[string]string{"status/base.yaml": "status: {phase: full}\n"})
	r.steps(t, 1)
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); !strings.Contains(st, "phase: canary") {
		t.Errorf("a status edited by hand stayed:\n%s", st)
	}

	r.breach()
	r.steps(t, 1)
	rollback := gittest.Git(t, r.remote, "log", "-1", "--format=%H", "--grep=^rollback(base)", "main")
	r.guards.readings = healthy()
	work := gittest.Clone(t, r.remote)
	gittest.Git(t, work, "revert", "--no-edit", rollback)
	gittest.PushRebasing(t, work)
	revert := gittest.Git(t, work, "rev-parse", "HEAD")
	r.until(t, 100, at("canary", 10))
	if rec := r.load(t); rec.Commit != revert {
		t.Errorf("the advance is not recorded against the revert %s: %+v", revert, rec)
	}

	// A force-push puts the branch back on an older commit with another
	// target.
	first := gittest.Git(t, r.remote, "rev-list", "--max-parents=0", "main")
	work = gittest.Clone(t, r.remote)
	gittest.Git(t, work, "reset", "-q", "--hard", first)
	r.clock.Step(time.Hour)
	forced := func(s string) string {
		return strings.Replace(s, "    phase: canary\n    percentage: 10\n", "    phase: shadow\n", 1)
	}
	b, _ := os.ReadFile(filepath.Join(work, "plans", "shop.yaml"))
	gittest.Write(t, filepath.Join(work, "plans", "shop.yaml"), forced(string(b)))
	gittest.Git(t, work, "commit", "-q", "-am", "rewritten")
	gittest.Git(t, work, "push", "-q", "--force", "origin", "HEAD:main")
	rewritten := gittest.Git(t, work, "rev-parse", "HEAD")
	r.steps(t, 1)
	if rec := r.load(t); !at("shadow", 0)(rec) || rec.Commit != rewritten {
		t.Errorf("the rewritten branch is not followed: %+v", rec)
	}
	if parent := gittest.Git(t, r.remote, "rev-parse", "main^"); parent != rewritten {
		t.Errorf("the daemon's status commit is not on the rewritten head %s: main^ is %s", rewritten, parent)
	}
}

// TestAuditPlansComeAndGo: of two plans one turns invalid (the other goes
// on); the plans folder disappears at the head (both migrations stay
// where they are, nothing is moved back); the folder comes back and the
// plans are followed again.
func TestAuditPlansComeAndGo(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	base := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
	other := strings.Replace(base, "  name: base\n", "  name: other\n", 1)
	r.commitFiles(t, "a second plan", map[string]string{"plans/other.yaml": other})
	r.holdingAt10(t)
	r.until(t, 100, func(store.Record) bool {
		rec, _ := r.store.Load(ctx, "other")
		return at("canary", 10)(rec)
	})

	broken := strings.Replace(other, "steps: [5, 10, 25]", "steps: [5, 10, 2]", 1)
	broken = strings.Replace(broken, "percentage: 10", "percentage: 25", 1)
	r.commitFiles(t, "break other, advance it", map[string]string{"plans/other.yaml": broken})
	r.commitFiles(t, "advance base", map[string]string{"plans/shop.yaml": strings.Replace(base, "percentage: 10", "percentage: 25", 1)})
	r.until(t, 100, at("canary", 25))
	if rec, _ := r.store.Load(ctx, "other"); !at("canary", 10)(rec) {
		t.Errorf("the broken plan moved: %+v", rec)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/other.yaml"); !strings.Contains(st, "type: PlanInvalid") {
		t.Errorf("status of the broken plan:\n%s", st)
	}

	r.commitFiles(t, "no plans", map[string]string{"plans/shop.yaml": "", "plans/other.yaml": ""})
	r.steps(t, 3)
	if rec := r.load(t); !at("canary", 25)(rec) {
		t.Errorf("with the plans gone the migration moved: %+v", rec)
	}
	if ds := r.d.snapshot(); len(ds) != 0 {
		t.Errorf("plans still followed: %d", len(ds))
	}
	r.commitFiles(t, "plans back", map[string]string{"plans/shop.yaml": base})
	r.steps(t, 1)
	if rec := r.load(t); !at("canary", 10)(rec) {
		t.Errorf("the plan back at 10%% is not followed: %+v", rec)
	}
}

// countingHeads is the plan repository counting the daemon's head checks.
type countingHeads struct {
	Git
	mu    sync.Mutex
	heads int
}

func (c *countingHeads) Head(ctx context.Context) (gitops.Hash, error) {
	c.mu.Lock()
	c.heads++
	c.mu.Unlock()
	return c.Git.Head(ctx)
}

func (c *countingHeads) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heads
}

// cycles tells of every finished reconcile cycle.
type cycles struct {
	Metrics
	done chan struct{}
}

func (c cycles) ReconcileDone(time.Duration)                 { c.done <- struct{}{} }
func (cycles) GitSynced(time.Time, time.Duration, error)     {}
func (cycles) SafetyCycle(time.Time, time.Duration)          {}
func (cycles) ObserveMigration(*plan.Plan, store.Record)     {}
func (cycles) SetConditions(string, []string)                {}
func (cycles) ObserveGuardrails(string, []reconcile.Reading) {}
func (cycles) RolledBack(string)                             {}
func (cycles) Forget(string)                                 {}

// TestAuditPollInterval: the branch is checked every Poll, or at once on a
// wake (a webhook); the reconcile ticks in between do not list the
// remote's refs. A daemon polling every 10 minutes to spare the forge's
// rate limit must not list them every 30 seconds.
func TestAuditPollInterval(t *testing.T) {
	r := newRig(t)
	git := &countingHeads{Git: r.d.Git}
	r.d.Git = git
	r.d.Poll, r.d.Interval = 10*time.Minute, 30*time.Second
	c := cycles{done: make(chan struct{}, 16)}
	r.d.Metrics = c
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = r.d.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()

	// heads waits until the head has been checked n times in all, and
	// fails if it is checked more often.
	heads := func(n int, what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); git.count() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d head checks, want %d", what, git.count(), n)
			}
		}
		time.Sleep(50 * time.Millisecond)
		if got := git.count(); got != n {
			t.Fatalf("%s: %d head checks, want %d", what, got, n)
		}
	}
	tick := func(d time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !r.clock.HasWaiters(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the loops do not wait on their tickers")
			}
		}
		r.clock.Step(d)
		for deadline := time.Now().Add(10 * time.Second); ; {
			select {
			case <-c.done:
				return
			case <-time.After(time.Until(deadline)):
				t.Fatal("no reconcile cycle after the tick")
			}
		}
	}
	heads(1, "the first sync")
	for range 4 {
		tick(30 * time.Second)
	}
	heads(1, "four reconcile ticks within the poll interval")
	r.d.Wake()
	heads(2, "a wake")
	tick(9 * time.Minute) // the poll ticker fires, with a reconcile tick
	heads(3, "the poll interval passed")
}

// TestAuditWebhookBranch: a push to the tracked branch wakes the loop also
// when the branch is given as a full ref name (gitops.Open takes both); a
// push to another branch, a tag, a ping or a wrongly signed push does not.
func TestAuditWebhookBranch(t *testing.T) {
	d := &Daemon{}
	srv := httptest.NewServer(d.Handler(HTTPOptions{WebhookSecret: []byte("s3cret"), Branch: "refs/heads/main"}))
	defer srv.Close()
	sig := func(body string) string {
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write([]byte(body))
		return hex.EncodeToString(mac.Sum(nil))
	}
	for _, tc := range []struct {
		name, ref, event, signature string
		code                        int
		wake                        bool
	}{
		{"push to main", "refs/heads/main", "push", "", http.StatusAccepted, true},
		{"push to another branch", "refs/heads/feature", "push", "", http.StatusAccepted, false},
		{"tag", "refs/tags/main", "push", "", http.StatusAccepted, false},
		{"ping", "", "ping", "", http.StatusAccepted, false},
		{"wrong signature", "refs/heads/main", "push", strings.Repeat("0", 64), http.StatusUnauthorized, false},
	} {
		body := `{"ref":"` + tc.ref + `","after":"0123456789abcdef0123456789abcdef01234567"}`
		s := tc.signature
		if s == "" {
			s = sig(body)
		}
		code, out := doBody(t, http.MethodPost, srv.URL+"/webhook", body, "X-GitHub-Event", tc.event, "X-Hub-Signature-256", "sha256="+s)
		if code != tc.code {
			t.Errorf("%s: %d %s", tc.name, code, out)
		}
		select {
		case <-d.wakeSync:
			if !tc.wake {
				t.Errorf("%s woke the loop", tc.name)
			}
		default:
			if tc.wake {
				t.Errorf("%s did not wake the loop", tc.name)
			}
		}
	}
}

// TestRenamedPlanCarriesOn: renaming a plan (metadata.name) that drives the
// same workloads carries its migration over to the new name instead of
// starting it again at start, which would pull the candidate's traffic
// back to stable; renaming it back carries it back.
func TestRenamedPlanCarriesOn(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.holdingAt10(t)
	base := gittest.Git(t, r.remote, "show", "main:plans/shop.yaml")
	renamed := strings.Replace(base, "  name: base\n", "  name: shop\n", 1)
	r.commitFiles(t, "rename the plan", map[string]string{"plans/shop.yaml": renamed})
	r.steps(t, 1)
	rec, err := r.store.Load(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if !at("canary", 10)(rec) {
		t.Fatalf("the renamed plan did not carry on at canary 10%%: %+v", rec)
	}
	hist, err := r.store.History(ctx, "shop", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hist, func(e store.Event) bool {
		return e.Kind == "Renamed" && strings.Contains(e.Reason, "plan base renamed shop")
	}) {
		t.Errorf("no Renamed event in the history of shop: %+v", hist)
	}

	// It goes on from there, and back under its first name it carries on
	// from where the second left it, not from base's older record.
	r.commitFiles(t, "advance", map[string]string{"plans/shop.yaml": strings.Replace(renamed, "percentage: 10", "percentage: 25", 1)})
	r.until(t, 100, func(store.Record) bool { rec, _ := r.store.Load(ctx, "shop"); return at("canary", 25)(rec) })
	r.commitFiles(t, "rename it back", map[string]string{"plans/shop.yaml": strings.Replace(base, "percentage: 10", "percentage: 25", 1)})
	r.steps(t, 1)
	if rec := r.load(t); !at("canary", 25)(rec) {
		t.Errorf("renamed back, the plan did not carry on at canary 25%%: %+v", rec)
	}
}

// TestLostStoreResumesFromStatus: a daemon that lost its store (a state
// folder that was not a volume) carries each migration on from its status
// file in Git when the workloads stand where that file says, instead of
// moving them back to start; where they do not, it starts afresh.
func TestLostStoreResumesFromStatus(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.holdingAt10(t)
	restart := func() {
		t.Helper()
		st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		repo, err := gitops.Open(ctx, gitops.Options{URL: r.url, Branch: "main", Path: "plans", Now: r.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		r.store = st
		r.d = &Daemon{Git: repo, Validator: r.d.Validator, Store: st, Clock: r.clock, Poll: r.d.Poll, Interval: r.d.Interval, Author: r.d.Author,
			Runner: &reconcile.Runner{Store: st, Open: r.fake.Opener(), Guards: r.guards, Clock: r.clock, Workers: 2}}
	}

	restart()
	resumed := r.clock.Now()
	r.steps(t, 1)
	rec := r.load(t)
	if rec.Position != (plan.Position{Phase: "canary", Percentage: 10}) {
		t.Fatalf("with its store lost, the daemon did not carry on at canary 10%%: %+v", rec)
	}
	if s := r.fake.Driver("base").State(); s.Traffic != 10 {
		t.Errorf("the workloads moved: %+v", s)
	}
	hist, err := r.store.History(ctx, "base", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) == 0 || hist[0].Kind != string(reconcile.Resume) || !strings.Contains(hist[0].Reason, "where it last reported itself") {
		t.Errorf("history after the resume: %+v", hist)
	}
	// The soak starts again from the resume: nothing is shortened.
	if !rec.GreenSince.Equal(resumed) {
		t.Errorf("GreenSince %v, want the moment of the resume %v", rec.GreenSince, resumed)
	}

	// Workloads that are not where the status file says: start afresh.
	if err := r.fake.Driver("base").Apply(ctx, drivers.Target{Traffic: 0}); err != nil {
		t.Fatal(err)
	}
	restart()
	r.steps(t, 2) // the flags, then shadow
	if rec := r.load(t); rec.Position != (plan.Position{Phase: "shadow"}) {
		t.Errorf("workloads elsewhere than the status says: %+v, want a fresh start at shadow", rec)
	}
}
