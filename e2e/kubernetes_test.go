package e2e

import (
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
)

// The scenarios of scenario_test.go on the Kubernetes driver, against the
// test control plane (see k8s_harness_test.go). Each runs in a namespace of
// its own with a daemon of its own; -run Kubernetes runs them alone.

// TestKubernetesPersistentFaultWalksDown: with previous-step, a fault that
// persists rolls back one step per `for` (60% → 30% → 10% → start), never
// two at once, and at each step the route's weights (or, without a route,
// the replica ratio) and the replicas are that step's; each rollback is
// committed to Git and the status file ends RolledBack at start.
func TestKubernetesPersistentFaultWalksDown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		routed   bool
		capacity int
	}{{"httproute", true, 4}, {"replica-ratio", false, 10}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := k8sPlan{target: 60, forWin: "3s"}
			e := newK8sEnv(t, tc.routed, tc.capacity, w)
			d := e.startAt(t, 60)
			s := e.sample(t, daemonOf(d))
			e.fault(t, true)
			d.wait(t, "shop", 2*time.Minute, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
			e.settled(t, d, 0, 30*time.Second)
			s.end()
			e.checkWalk(t, s, 60, 30, 10, 0)

			e.checkWalkedDown(t, s.all())
		})
	}
}

// checkRolledBackInGit checks the plan repository's log has rollback
// commits by the daemon whose subjects hold each of steps.
func (e *k8sEnv) checkRolledBackInGit(t *testing.T, steps ...string) {
	t.Helper()
	var log string
	waitFor(t, 30*time.Second, "the rollback commits", func() bool {
		log = gittest.Git(t, e.remote, "log", "--format=%s", "main")
		for _, s := range steps {
			if !strings.Contains(log, s) {
				return false
			}
		}
		return true
	})
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "→") && !strings.HasPrefix(l, "rollback(shop): ") && !strings.HasPrefix(l, "status: ") {
			t.Errorf("a move in Git not by a rollback commit: %q", l)
		}
	}
}

// TestKubernetesTransientFault: a fault that stops after the rollback goes
// back once (60% → 30%, route and replicas with it), holds there through
// several soaks with the workloads untouched, and advances again only
// after a newer commit.
func TestKubernetesTransientFault(t *testing.T) {
	t.Parallel()
	w := k8sPlan{target: 60, forWin: "2s", soak: "2s"}
	e := newK8sEnv(t, true, 4, w)
	d := e.startAt(t, 60)
	s := e.sample(t, daemonOf(d))
	e.fault(t, true)
	d.wait(t, "shop", time.Minute, "rolled back to 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
	e.fault(t, false)
	e.settled(t, d, 30, 30*time.Second)
	time.Sleep(10 * time.Second) // five soaks, the fault gone
	s.end()
	e.checkWalk(t, s, 60, 30) // and nothing after 30%
	if m, _ := d.migration("shop"); m.State != "RolledBack" {
		t.Errorf("state %s, want RolledBack", m.State)
	}
	e.checkRolledBackInGit(t, "canary 60% → canary 30%")
	waitFor(t, 30*time.Second, "the plan file names canary 30%", func() bool {
		return strings.Contains(e.show(t, "plans/shop.yaml"), "target: {phase: canary, percentage: 30}")
	})
	waitFor(t, 30*time.Second, "the status file says RolledBack at canary 30%", func() bool {
		st := e.show(t, "status/shop.yaml")
		return strings.Contains(st, "percentage: 30") && strings.Contains(st, "state: RolledBack")
	})

	// A newer commit (the target raised again, and a flag) allows the
	// advance.
	s = e.sample(t, daemonOf(d))
	e.push(t, "back to 60%, the fault is fixed", map[string]string{"plans/shop.yaml": k8sPlan{target: 60, forWin: "2s", soak: "2s", features: "fixed: 100"}.yaml(e)})
	d.wait(t, "shop", time.Minute, "advanced again to 60%", func(m daemon.Migration) bool { return m.Position == pos(60) })
	e.settled(t, d, 60, 30*time.Second)
	s.end()
	e.checkWalk(t, s, 30, 60)
	waitFor(t, 30*time.Second, "the status file says canary 60%", func() bool {
		return strings.Contains(e.show(t, "status/shop.yaml"), "percentage: 60")
	})
}

// TestKubernetesRevertPushed: reverting the commit that advanced the
// target moves the migration straight back, without a soak, as a rollback
// by that commit: the route's weights and the candidate's replicas go back
// with it.
func TestKubernetesRevertPushed(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, true, 4, k8sPlan{target: 30})
	d := e.startAt(t, 30)
	advance := e.push(t, "to 60%", map[string]string{"plans/shop.yaml": k8sPlan{target: 60}.yaml(e)})
	d.wait(t, "shop", time.Minute, "at 60%", func(m daemon.Migration) bool { return m.Position == pos(60) })
	e.settled(t, d, 60, 30*time.Second)
	s := e.sample(t, daemonOf(d))
	work := gittest.Clone(t, e.remote)
	gittest.Git(t, work, "revert", "--no-edit", advance)
	gittest.PushRebasing(t, work)
	revert := gittest.Git(t, work, "rev-parse", "HEAD")
	start := time.Now()
	m := d.wait(t, "shop", 30*time.Second, "back at 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
	back := e.settled(t, d, 30, 30*time.Second)
	took := time.Since(start)
	t.Logf("the revert applied in %s: %s", took.Round(10*time.Millisecond), back)
	if took > 10*time.Second {
		t.Errorf("the revert took %s to reach the workloads", took)
	}
	s.end()
	e.checkWalk(t, s, 60, 30)
	ev, err := event(m, "MoveBack")
	if err != nil || !strings.Contains(ev.Reason, "rollback by commit "+revert[:12]) {
		t.Errorf("the move back does not name the revert %s: %+v %v\n%s", revert, ev, err,
			gittest.Git(t, e.remote, "log", "-5", "--format=%H %s", "main"))
	}
	waitFor(t, 30*time.Second, "the status file says canary 30% by the revert", func() bool {
		st := e.show(t, "status/shop.yaml")
		return strings.Contains(st, "percentage: 30") && strings.Contains(st, "commit: "+revert)
	})
	t.Logf("the status file says so %s after the revert", time.Since(start).Round(10*time.Millisecond))
}

// TestKubernetesInvalidCommit, by replica ratio: a commit that breaks the
// plan leaves the migration and its replicas on the last good version, the
// status (API and file in Git) says PlanInvalid naming the commit, and a
// fix is followed.
func TestKubernetesInvalidCommit(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, false, 10, k8sPlan{target: 30})
	d := e.startAt(t, 30)
	s := e.sample(t, daemonOf(d))
	good := k8sPlan{target: 60}.yaml(e)
	broken := e.push(t, "a typo", map[string]string{"plans/shop.yaml": strings.Replace(good, "steps: [10, 30, 60]", "steps: [10, 30, 20]", 1)})
	m := d.wait(t, "shop", 30*time.Second, "PlanInvalid", func(m daemon.Migration) bool { return hasCondition(m, "PlanInvalid") })
	for _, c := range m.Conditions {
		if c.Type == "PlanInvalid" && (c.Commit != broken || !strings.Contains(c.Message, "plans/shop.yaml")) {
			t.Errorf("the condition does not name the commit %s and the file: %+v", broken, c)
		}
	}
	waitFor(t, 30*time.Second, "the status file says PlanInvalid", func() bool {
		return strings.Contains(e.show(t, "status/shop.yaml"), "type: PlanInvalid")
	})
	time.Sleep(3 * time.Second) // more than a soak
	for _, x := range s.all() {
		if x.pos != pos(30) || x.objects() != e.expect(30) {
			t.Errorf("a broken plan moved the migration: %s", x.world)
		}
	}
	e.push(t, "fixed", map[string]string{"plans/shop.yaml": good})
	d.wait(t, "shop", time.Minute, "the fix followed to 60%", func(m daemon.Migration) bool {
		return m.Position == pos(60) && !hasCondition(m, "PlanInvalid")
	})
	e.settled(t, d, 60, 30*time.Second)
	s.end()
	e.checkWalk(t, s, 30, 60)
	waitFor(t, 30*time.Second, "the status file without PlanInvalid", func() bool {
		st := e.show(t, "status/shop.yaml")
		return !strings.Contains(st, "PlanInvalid") && strings.Contains(st, "percentage: 60")
	})
}

// TestKubernetesKillMidSoak: a daemon killed with SIGKILL in the middle of
// a soak resumes from its store without skipping any of it, and the route
// and replicas stay as they were across the restart: no step applied
// twice, none undone.
func TestKubernetesKillMidSoak(t *testing.T) {
	t.Parallel()
	e := newK8sEnv(t, true, 4, k8sPlan{target: 30, soak: "10s"})
	var cur atomic.Pointer[daemonProc]
	d := e.startDaemon(t)
	cur.Store(d)
	d.wait(t, "shop", time.Minute, "entered 10%", func(m daemon.Migration) bool { return m.Position == pos(10) })
	s := e.sample(t, func() *daemonProc { return cur.Load() })
	m, err := d.migration("shop")
	if err != nil {
		t.Fatal(err)
	}
	entered, err := event(m, "Advance")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // in the middle of the 10s soak
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	time.Sleep(time.Second) // the workloads, untended
	restarted := time.Now()
	d = e.startDaemon(t)
	cur.Store(d)
	m = d.wait(t, "shop", time.Minute, "advanced to 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })
	e.settled(t, d, 30, 30*time.Second)
	s.end()
	e.checkWalk(t, s, 10, 30)
	ev, err := event(m, "Advance")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("advanced %s after entering 10%%, %s after the restart", ev.At.Sub(entered.At).Round(time.Millisecond), ev.At.Sub(restarted).Round(time.Millisecond))
	if held := ev.At.Sub(entered.At); held < 10*time.Second {
		t.Errorf("left 10%% %s after entering it: the soak of 10s was cut short", held)
	}
	if wait := ev.At.Sub(restarted); wait < 10*time.Second-500*time.Millisecond {
		t.Errorf("advanced %s after the restart: the soak of 10s was shortened", wait.Round(time.Millisecond))
	}
	n := 0
	for _, h := range m.History {
		if h.Action == "Advance" && h.To == "canary 10%" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("10%% entered %d times in the history: %+v", n, m.History)
	}
	waitFor(t, 30*time.Second, "the status file says canary 30%", func() bool {
		return strings.Contains(e.show(t, "status/shop.yaml"), "percentage: 30")
	})
}
