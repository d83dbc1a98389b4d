package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// walkPlan is a plan with canary steps 10, 30, 60 soaking soak each, its
// target at target%, an error-rate guardrail on the candidate over `for`,
// and the rollback policy and onNoData given.
type walkPlan struct {
	target   int
	soak     string
	forWin   string
	rollback string // previous-step by default
	onNoData string // hold by default
	features string // a line under spec.features, if any
	settle   string // the guardrail's settle, if any
}

func (w walkPlan) yaml(e *env) string {
	if w.rollback == "" {
		w.rollback = "previous-step"
	}
	if w.onNoData == "" {
		w.onNoData = "hold"
	}
	if w.soak == "" {
		w.soak = "3s"
	}
	if w.forWin == "" {
		w.forWin = "3s"
	}
	settle := ""
	if w.settle != "" {
		settle = "      settle: " + w.settle + "\n"
	}
	features := ""
	if w.features != "" {
		features = "  features:\n    " + w.features + "\n"
	}
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target: {phase: canary, percentage: %d}
  driver:
    docker:
      stable: {container: %s}
      candidate: {container: %s}
      traffic: {nginx: {upstream: %s}}
  phases:
    - name: canary
      steps: [10, 30, 60]
      soak: %s
  guardrails:
    - name: errors
      prometheus:
        query: '(sum(rate(http_requests_total{version="v2",code="500"}[2s])) or vector(0)) / sum(rate(http_requests_total{version="v2"}[2s]))'
      max: 0.2
      for: %s
%s  rollback:
    to: %s
    onNoData: %s
%s`, w.target, e.stable.name, e.candidate.name, e.upstream, w.soak, w.forWin, settle, w.rollback, w.onNoData, features)
}

// load sends steady traffic through nginx, bounded in time and count,
// until the test ends.
func (e *env) load(t *testing.T) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		c := &http.Client{Timeout: time.Second}
		tick := time.NewTicker(10 * time.Millisecond) // 100 requests a second
		defer tick.Stop()
		deadline := time.Now().Add(10 * time.Minute)
		for n := 0; n < 60_000 && time.Now().Before(deadline); n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			res, err := c.Get("http://" + e.nginx.Addr + "/")
			if err == nil {
				res.Body.Close()
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// sampler records the migration's position every 50ms.
type sampler struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at  time.Time
	pos plan.Position
}

func (d *daemonProc) sample(t *testing.T) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if m, err := d.migration("shop"); err == nil {
				s.mu.Lock()
				if n := len(s.samples); n == 0 || s.samples[n-1].pos != m.Position {
					s.samples = append(s.samples, sample{at: time.Now(), pos: m.Position})
				}
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

func (s *sampler) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// positions returns the positions seen, in order, each once per stay.
func (s *sampler) positions() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}

// walkEnv starts an env with w's plan, the daemon with extra configuration,
// nginx and load, and waits until the migration rests at its target.
func walkEnv(t *testing.T, w walkPlan, extra string) (*env, *daemonProc) {
	t.Helper()
	e := newEnv(t, map[string]func(*env) string{"shop.yaml": w.yaml})
	d := e.startDaemon(t, extra)
	e.startNginx(t)
	e.load(t)
	target := plan.Position{Phase: "canary", Percentage: w.target}
	d.wait(t, "shop", 2*time.Minute, "at rest at "+target.String(), func(m daemon.Migration) bool {
		return m.Position == target && (m.State == "Holding" || m.State == "Completed")
	})
	return e, d
}

// pos is a canary position.
func pos(pct int) plan.Position { return plan.Position{Phase: "canary", Percentage: pct} }

// explainBreach returns what `plan explain` says a breach does at each
// step of the repository's plan, by position.
func (e *env) explainBreach(t *testing.T) map[plan.Position]plan.Breach {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "shop.yaml")
	if err := os.WriteFile(file, []byte(e.show(t, "plans/shop.yaml")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(hal9(t), "plan", "explain", file, "-o", "json").Output()
	if err != nil {
		t.Fatalf("plan explain: %v", err)
	}
	var ex struct {
		Steps []plan.Step `json:"steps"`
	}
	if err := json.Unmarshal(out, &ex); err != nil {
		t.Fatalf("plan explain -o json: %v\n%s", err, out)
	}
	m := map[plan.Position]plan.Breach{}
	for _, s := range ex.Steps {
		m[s.Position] = s.OnBreach
	}
	return m
}

// TestPersistentFaultWalksDown: with previous-step, a fault that persists
// rolls back one step per `for` (60% → 30% → 10% → start), never two at
// once, each rollback committed to Git, as plan explain's ON BREACH column
// says.
func TestPersistentFaultWalksDown(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 60, forWin: "4s"}, "")
	on := e.explainBreach(t)
	s := d.sample(t)
	e.set(t, e.candidate, map[string]string{"errorRate": "1"})
	d.wait(t, "shop", 2*time.Minute, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
	time.Sleep(300 * time.Millisecond) // the sampler sees it too
	s.end()

	seen := s.positions()
	var path []string
	for _, x := range seen {
		path = append(path, x.pos.String())
	}
	t.Logf("positions: %s", strings.Join(path, " → "))
	want := []plan.Position{pos(60), pos(30), pos(10), plan.Start}
	if len(seen) != len(want) {
		t.Fatalf("walked %v, want %v", path, want)
	}
	for i := range want {
		if seen[i].pos != want[i] {
			t.Fatalf("walked %v, want %v", path, want)
		}
		if i > 0 {
			if b := on[want[i-1]]; b.Action != plan.BreachRollback || *b.To != want[i] {
				t.Errorf("plan explain says a breach at %s does %s, the daemon went to %s", want[i-1], b, want[i])
			}
		}
		if i > 1 {
			stay := seen[i].at.Sub(seen[i-1].at)
			t.Logf("at %s for %s", want[i-1], stay.Round(10*time.Millisecond))
			if stay < 4*time.Second {
				t.Errorf("rolled back from %s after %s, before its `for` (4s) had passed there", want[i-1], stay)
			}
		}
	}
	// Git names the live position, each rollback in a commit of its own
	// or a chain in one, and the status file says so.
	waitFor(t, 30*time.Second, "the plan file names start", func() bool {
		return strings.Contains(e.show(t, "plans/shop.yaml"), "target: {phase: canary, percentage: 0}")
	})
	log := gittest.Git(t, e.remote, "log", "--format=%s", "main")
	for _, step := range []string{"canary 60% → ", "→ start"} {
		if !strings.Contains(log, step) {
			t.Errorf("no rollback commit with %q:\n%s", step, log)
		}
	}
	waitFor(t, 30*time.Second, "the status file says RolledBack at start", func() bool {
		st := e.show(t, "status/shop.yaml")
		return strings.Contains(st, "phase: start") && strings.Contains(st, "state: RolledBack")
	})
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}

// TestTransientFault: a fault that stops after the rollback goes back
// once, holds there, and advances again only after a newer commit.
func TestTransientFault(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 60, forWin: "2s", soak: "2s"}, "")
	e.set(t, e.candidate, map[string]string{"errorRate": "1"})
	d.wait(t, "shop", time.Minute, "rolled back to 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
	e.set(t, e.candidate, map[string]string{"errorRate": "0"})
	s := d.sample(t)
	time.Sleep(12 * time.Second) // four soaks and more
	for _, x := range s.positions() {
		if x.pos != pos(30) {
			t.Fatalf("moved to %s without a newer commit", x.pos)
		}
	}
	if m, _ := d.migration("shop"); m.State != "RolledBack" {
		t.Errorf("state %s, want RolledBack", m.State)
	}
	// A newer commit to the plan (a flag) allows the advance again; the
	// rollback lowered the target, so the person raises it too.
	e.push(t, "back to 60%, the fault is fixed", map[string]string{"plans/shop.yaml": walkPlan{target: 60, forWin: "2s", soak: "2s", features: "fixed: 100"}.yaml(e)})
	d.wait(t, "shop", time.Minute, "advanced again to 60%", func(m daemon.Migration) bool { return m.Position == pos(60) })
}

// TestFlappingGuardrail: a value that crosses its bound and comes back
// within `for`, again and again, is never a breach.
func TestFlappingGuardrail(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 60, forWin: "6s"}, "")
	s := d.sample(t)
	for range 6 {
		e.set(t, e.candidate, map[string]string{"errorRate": "1"})
		time.Sleep(1500 * time.Millisecond)
		e.set(t, e.candidate, map[string]string{"errorRate": "0"})
		time.Sleep(3 * time.Second) // the 2s rate window empties
	}
	for _, x := range s.positions() {
		if x.pos != pos(60) {
			t.Fatalf("a flapping guardrail moved the migration to %s", x.pos)
		}
	}
}

// TestPrometheusStopped: with Prometheus gone, onNoData decides: hold stays
// where it is, rollback rolls back, ignore carries on to the target.
func TestPrometheusStopped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		onNoData string
		want     plan.Position
	}{{"hold", pos(10)}, {"rollback", plan.Start}, {"ignore", pos(60)}} {
		t.Run(tc.onNoData, func(t *testing.T) {
			// The query has no data until Prometheus has scraped the
			// candidate's traffic twice: settle waits for it after each
			// move, so that onNoData judges Prometheus gone, not a
			// candidate just started.
			w := walkPlan{target: 10, onNoData: tc.onNoData, settle: "4s"}
			e, d := walkEnv(t, w, "")
			e.prom.Stop()
			time.Sleep(3 * time.Second) // the guardrail reads Error now
			w.target = 60
			pushed := e.push(t, "on to 60%", map[string]string{"plans/shop.yaml": w.yaml(e)})
			s := d.sample(t)
			switch tc.want {
			case pos(10):
				time.Sleep(12 * time.Second) // two soaks of 3s, twice over
			case plan.Start:
				// Rolled back under the new commit, which may first have
				// let it enter canary 10% again after an earlier rollback.
				d.wait(t, "shop", 90*time.Second, "at start, canary 10% failed under "+pushed, func(m daemon.Migration) bool {
					for _, f := range m.Failed {
						if f.Position == pos(10).String() && f.Commit != "" && strings.HasPrefix(pushed, f.Commit) {
							return m.Position.IsStart()
						}
					}
					return false
				})
				time.Sleep(3 * time.Second) // and stays
			default:
				// However busy the machine, it gets there; a wrong turn
				// shows in the positions below.
				d.wait(t, "shop", 90*time.Second, "at "+tc.want.String(), func(m daemon.Migration) bool { return m.Position == tc.want })
				time.Sleep(3 * time.Second) // and stays
			}
			s.end()
			seen := s.positions()
			if last := seen[len(seen)-1].pos; last != tc.want {
				t.Errorf("onNoData %s: at %s, want %s (positions %v)", tc.onNoData, last, tc.want, seen)
			}
			for i := 1; i < len(seen); i++ {
				from, to := seen[i-1].pos, seen[i].pos
				var wrong bool
				switch tc.onNoData {
				case "hold":
					wrong = true // it never moves
				case "rollback":
					// The new commit lets it enter canary 10% again, where
					// it rolls back again; it never gets further.
					wrong = to.Percentage > 10
				case "ignore":
					wrong = to.Percentage < from.Percentage
				}
				if wrong {
					t.Errorf("onNoData %s: moved from %s to %s (positions %v)", tc.onNoData, from, to, seen)
				}
			}
			if tc.onNoData == "hold" {
				if m, _ := d.migration("shop"); !strings.Contains(m.Reason, "errors") {
					t.Errorf("hold: the reason does not name the guardrail: %s", m.Reason)
				}
			}
		})
	}
}

// TestRevertPushed: reverting the commit that advanced the target moves the
// migration straight back, without a soak, as a rollback by that commit.
func TestRevertPushed(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 30, soak: "2s"}, "")
	advance := e.push(t, "to 60%", map[string]string{"plans/shop.yaml": walkPlan{target: 60, soak: "2s"}.yaml(e)})
	d.wait(t, "shop", time.Minute, "at 60%", func(m daemon.Migration) bool { return m.Position == pos(60) })
	work := gittest.Clone(t, e.remote)
	gittest.Git(t, work, "revert", "--no-edit", advance)
	gittest.PushRebasing(t, work)
	revert := gittest.Git(t, work, "rev-parse", "HEAD")
	start := time.Now()
	m := d.wait(t, "shop", 30*time.Second, "back at 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the revert took %s to apply", took)
	}
	ev, err := event(m, "MoveBack")
	if err != nil || !strings.Contains(ev.Reason, "rollback by commit "+revert[:12]) {
		t.Errorf("the move back: %+v %v", ev, err)
	}
}

// TestInvalidCommit: a commit that breaks the plan leaves the migration on
// its last good version, the status names the commit that broke it, and a
// fix is followed.
func TestInvalidCommit(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 30, soak: "2s"}, "")
	good := walkPlan{target: 60, soak: "2s"}.yaml(e)
	broken := e.push(t, "a typo", map[string]string{"plans/shop.yaml": strings.Replace(good, "steps: [10, 30, 60]", "steps: [10, 30, 20]", 1)})
	m := d.wait(t, "shop", 30*time.Second, "PlanInvalid", func(m daemon.Migration) bool { return hasCondition(m, "PlanInvalid") })
	for _, c := range m.Conditions {
		if c.Type == "PlanInvalid" && (c.Commit != broken || !strings.Contains(c.Message, "plans/shop.yaml")) {
			t.Errorf("the condition does not name the commit %s and the file: %+v", broken, c)
		}
	}
	time.Sleep(5 * time.Second)
	if m, _ := d.migration("shop"); m.Position != pos(30) {
		t.Errorf("a broken plan moved the migration to %s", m.Position)
	}
	waitFor(t, 30*time.Second, "the status file says PlanInvalid", func() bool {
		return strings.Contains(e.show(t, "status/shop.yaml"), "type: PlanInvalid")
	})
	e.push(t, "fixed", map[string]string{"plans/shop.yaml": good})
	d.wait(t, "shop", time.Minute, "the fix followed to 60%", func(m daemon.Migration) bool {
		return m.Position == pos(60) && !hasCondition(m, "PlanInvalid")
	})
}

// TestKillMidSoak: a daemon killed with SIGKILL in the middle of a soak
// resumes from its store without skipping any of it.
func TestKillMidSoak(t *testing.T) {
	t.Parallel()
	w := walkPlan{target: 30, soak: "10s"}
	e := newEnv(t, map[string]func(*env) string{"shop.yaml": w.yaml})
	d := e.startDaemon(t, "")
	e.startNginx(t)
	e.load(t)
	d.wait(t, "shop", time.Minute, "entered 10%", func(m daemon.Migration) bool { return m.Position == pos(10) })
	time.Sleep(4 * time.Second) // in the middle of the 10s soak
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	restarted := time.Now()
	d = e.startDaemon(t, "")
	m := d.wait(t, "shop", time.Minute, "advanced to 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
	ev, err := event(m, "Advance")
	if err != nil {
		t.Fatal(err)
	}
	if wait := ev.At.Sub(restarted); wait < 10*time.Second-500*time.Millisecond {
		t.Errorf("advanced %s after the restart: the soak of 10s was shortened", wait.Round(time.Millisecond))
	}
	entered := 0
	for _, h := range m.History {
		if h.Action == "Advance" && h.To == "canary 10%" {
			entered++
		}
	}
	if entered != 1 {
		t.Errorf("10%% entered %d times in the history: %+v", entered, m.History)
	}
}

// TestKillMidRollback: a daemon killed with SIGKILL right after a rollback,
// before its commit can reach Git, commits it once restarted.
func TestKillMidRollback(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 30, forWin: "1s", rollback: "start"}, "git: {timeouts: {push: 30s}}\n")
	e.gitProxy.Hang(true) // the rollback's commit cannot land
	e.set(t, e.candidate, map[string]string{"errorRate": "1"})
	d.wait(t, "shop", time.Minute, "rolled back", func(m daemon.Migration) bool { return m.Position.IsStart() })
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	e.gitProxy.Hang(false)
	if p := e.show(t, "plans/shop.yaml"); !strings.Contains(p, "percentage: 30") {
		t.Fatalf("the rollback reached Git before the kill:\n%s", p)
	}
	d = e.startDaemon(t, "")
	waitFor(t, time.Minute, "the rollback committed after the restart", func() bool {
		return strings.Contains(e.show(t, "plans/shop.yaml"), "target: {phase: canary, percentage: 0}")
	})
	if m, _ := d.migration("shop"); !m.Position.IsStart() || m.State != "RolledBack" {
		t.Errorf("after the restart: %s %s", m.Position, m.State)
	}
	if log := gittest.Git(t, e.remote, "log", "-1", "--format=%B", "main", "--", "plans/shop.yaml"); !strings.Contains(log, "rollback(shop): canary 30% → start") ||
		!strings.Contains(log, "Guardrail errors was") {
		t.Errorf("the rollback commit after the restart:\n%s", log)
	}
}

// TestPrecheckDeepCLI: pre-check --deep, as an operator runs it against the
// daemon, runs every query and HTTP check once.
func TestPrecheckDeepCLI(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 10}, "")
	_ = e
	cmd := exec.Command(hal9(t), "pre-check", "--deep", "--daemon", d.url, "-o", "json")
	cmd.Env = append(os.Environ(), "HAL9_MIGRATE_API_TOKEN=e2e-token")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pre-check --deep: %v\n%s", err, out)
	}
	for _, want := range []string{`"component": "prometheus"`, `"subject": "guardrail errors"`, `"result": "ok"`, `"component": "driver"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("pre-check --deep lacks %s:\n%s", want, out)
		}
	}
}

// TestPullRequestFlow: migrate --branch pushes a branch that moves the
// target; plan diff --base on it says what merging does; merging it moves
// the migration.
func TestPullRequestFlow(t *testing.T) {
	t.Parallel()
	e, d := walkEnv(t, walkPlan{target: 10, soak: "2s"}, "")
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(hal9(t), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), gittest.Env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hal9-migrate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(e.dir, "migrate", "--phase", "canary", "--percentage", "60", "--branch", "to-60", "--repo", "file://"+e.remote, "--yes")
	work := gittest.Clone(t, e.remote)
	gittest.Git(t, work, "checkout", "-q", "to-60")
	diff := run(work, "plan", "diff", "--base", "origin/main", "--format", "markdown")
	for _, want := range []string{"shop", "canary 10%", "canary 60%"} {
		if !strings.Contains(diff, want) {
			t.Errorf("plan diff lacks %q:\n%s", want, diff)
		}
	}
	if m, _ := d.migration("shop"); m.Position != pos(10) {
		t.Errorf("an unmerged branch moved the migration to %s", m.Position)
	}
	// Merged as a person would: onto the status commits the daemon pushed
	// since the branch was cut.
	gittest.PushRebasing(t, work)
	d.wait(t, "shop", time.Minute, "merged: at 60%", func(m daemon.Migration) bool { return m.Position == pos(60) })
}

var _ = context.Background
