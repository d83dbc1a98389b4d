package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/plan"
)

// shopPlan is a plan at canary target% between the env's containers,
// through nginx on the host, with a Prometheus guardrail that stays green
// and an HTTP health guardrail on the candidate that breaches at its first
// failure, rolling back to start.
func shopPlan(target int) func(e *env) string {
	return func(e *env) string {
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
      steps: [10, 50]
      soak: 1s
  guardrails:
    - name: errors
      prometheus: {query: 'sum(rate(http_requests_total{version="v2",code="500"}[5s])) or vector(0)'}
      max: 1000
    - name: health
      http: {url: 'http://%s/health', timeout: 500ms}
      failures: 1
  rollback:
    to: start
    onNoData: hold
`, target, e.stable.name, e.candidate.name, e.upstream, e.candidate.addr)
	}
}

var (
	canary10 = plan.Position{Phase: "canary", Percentage: 10}
	canary50 = plan.Position{Phase: "canary", Percentage: 50}
)

// startTarget is how a plan file says start after a rollback there: its
// first phase at 0%.
const startTarget = "target: {phase: canary, percentage: 0}"

// interval is the daemon's evaluation interval in this suite (startDaemon's
// configuration).
const interval = time.Second

// maxRSS bounds the daemon's resident memory through any hostile input.
const maxRSS = 256 << 20

// hostile is one input that must not stop a rollback: inject puts it in
// place, fix takes it away, and recovered checks the daemon came back to
// normal after the fix.
type hostile struct {
	name      string
	inject    func(t *testing.T, e *env, d *daemonProc)
	fix       func(t *testing.T, e *env, d *daemonProc)
	recovered func(t *testing.T, e *env, d *daemonProc)
}

// aliasBomb is a YAML document of nested anchors: nine levels of ten
// aliases, 10^9 nodes once expanded, in under a kilobyte.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("apiVersion: migrate.hal9.ai/v1\nkind: MigrationPlan\nmetadata: {name: shop}\n")
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("spec: *a9\n")
	return b.String()
}

// cueLoop is a CUE plan whose evaluation does not end in any useful time.
const cueLoop = `package plans

import "list"

apiVersion: "migrate.hal9.ai/v1"
kind:       "MigrationPlan"
metadata: name: "loop"
spec: features: {
	for i in list.Range(0, 4000, 1) for j in list.Range(0, 4000, 1) {
		"f\(i)_\(j)": 1
	}
}
`

// hugePlan is a valid plan of about 20 MB: the shop plan with 400,000
// feature flags.
func hugePlan(e *env) string {
	var b strings.Builder
	b.WriteString(shopPlan(50)(e))
	b.WriteString("  features:\n")
	for i := range 400_000 {
		fmt.Fprintf(&b, "    flag_number_%07d_with_a_long_name: %d\n", i, i%101)
	}
	return b.String()
}

// invalidReported waits until the shop migration's status reports its
// plan invalid.
func invalidReported(t *testing.T, d *daemonProc) {
	t.Helper()
	d.wait(t, "shop", 30*time.Second, "PlanInvalid reported", func(m daemon.Migration) bool { return hasCondition(m, "PlanInvalid") })
}

func hasCondition(m daemon.Migration, typ string) bool {
	for _, c := range m.Conditions {
		if c.Type == typ {
			return true
		}
	}
	return false
}

// logSays waits until the daemon's log holds s.
func logSays(t *testing.T, d *daemonProc, s string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(d.logPath)
		if strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's log does not say %q within %s", s, timeout)
		}
	}
}

// TestHostileInputs runs alone, before the parallel scenarios, since it
// measures latencies. For each hostile input, pushed to the plan repository
// or made by a backend that accepts connections and never answers, a
// breach of the candidate's health is rolled back within one evaluation
// interval + 100ms of the failure becoming visible, the daemon stays under
// 256 MiB, and it recovers once the input is fixed.
func TestHostileInputs(t *testing.T) {
	restore := func(t *testing.T, e *env, d *daemonProc) {
		e.push(t, "fix the plan", map[string]string{"plans/shop.yaml": shopPlan(10)(e)})
	}
	planValidAgain := func(t *testing.T, e *env, d *daemonProc) {
		d.wait(t, "shop", 30*time.Second, "PlanInvalid cleared after the fix", func(m daemon.Migration) bool {
			return !hasCondition(m, "PlanInvalid") && m.TargetPos == canary10
		})
	}
	cases := []hostile{
		{
			name: "YAML alias bomb",
			inject: func(t *testing.T, e *env, d *daemonProc) {
				e.push(t, "an alias bomb", map[string]string{"plans/shop.yaml": aliasBomb()})
				invalidReported(t, d)
			},
			fix: restore, recovered: planValidAgain,
		},
		{
			name: "CUE loop",
			inject: func(t *testing.T, e *env, d *daemonProc) {
				e.push(t, "a CUE loop", map[string]string{"plans/loop.cue": cueLoop})
				logSays(t, d, "plans/loop.cue", 60*time.Second)
			},
			fix: func(t *testing.T, e *env, d *daemonProc) {
				e.push(t, "no loop", map[string]string{"plans/loop.cue": "", "plans/shop.yaml": shopPlan(10)(e)})
			},
			recovered: func(t *testing.T, e *env, d *daemonProc) {
				d.wait(t, "shop", 60*time.Second, "the fix followed", func(m daemon.Migration) bool { return m.TargetPos == canary10 })
			},
		},
		{
			name: "20 MB plan",
			inject: func(t *testing.T, e *env, d *daemonProc) {
				e.push(t, "400,000 flags", map[string]string{"plans/shop.yaml": hugePlan(e)})
				invalidReported(t, d)
			},
			fix: restore, recovered: planValidAgain,
		},
		{
			name: "Git remote silent",
			inject: func(t *testing.T, e *env, d *daemonProc) {
				e.gitProxy.Hang(true)
				time.Sleep(3 * time.Second) // the poll finds it silent
			},
			fix: func(t *testing.T, e *env, d *daemonProc) { e.gitProxy.Hang(false) },
			recovered: func(t *testing.T, e *env, d *daemonProc) {
				// The rollback the silent remote kept out of Git lands.
				for deadline := time.Now().Add(60 * time.Second); !strings.Contains(e.show(t, "plans/shop.yaml"), startTarget); time.Sleep(100 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("the rollback never reached Git:\n%s", e.show(t, "plans/shop.yaml"))
					}
				}
				d.wait(t, "shop", 30*time.Second, "RollbackNotCommitted cleared", func(m daemon.Migration) bool { return !hasCondition(m, "RollbackNotCommitted") })
			},
		},
		{
			name: "Prometheus silent",
			inject: func(t *testing.T, e *env, d *daemonProc) {
				e.promProx.Hang(true)
				time.Sleep(3 * time.Second)
			},
			fix: func(t *testing.T, e *env, d *daemonProc) {
				e.promProx.Hang(false)
				e.push(t, "again, now that Prometheus answers", map[string]string{"plans/shop.yaml": shopPlan(10)(e)})
			},
			recovered: func(t *testing.T, e *env, d *daemonProc) {
				d.wait(t, "shop", 60*time.Second, "canary 10% with the errors guardrail measured again", func(m daemon.Migration) bool {
					if m.Position != canary10 {
						return false
					}
					for _, r := range m.Guardrails {
						if r.Name == "errors" {
							return r.Health == "Healthy"
						}
					}
					return false
				})
			},
		},
	}
	for _, h := range cases {
		t.Run(strings.ReplaceAll(h.name, " ", "_"), func(t *testing.T) {
			e := newEnv(t, map[string]func(*env) string{"shop.yaml": shopPlan(50)})
			d := e.startDaemon(t, "")
			e.startNginx(t)
			d.wait(t, "shop", 90*time.Second, "at rest at canary 50%", func(m daemon.Migration) bool {
				return m.Position == canary50 && (m.State == "Holding" || m.State == "Completed")
			})

			began := time.Now()
			step := func(what string) { t.Logf("%s: %s after %s", h.name, what, time.Since(began).Round(time.Millisecond)) }
			step("at rest at canary 50%")
			h.inject(t, e, d)
			d.alive(t)
			step("injected")

			visible, rolledBack := e.breach(t, d)
			lag := rolledBack.Sub(visible)
			t.Logf("%s: the candidate failed its health check at %s; rolled back %s later", h.name, visible.Format("15:04:05.000"), lag.Round(time.Millisecond))
			if lag > interval+100*time.Millisecond {
				t.Errorf("%s: the rollback came %s after the failure was visible, want within %s", h.name, lag.Round(time.Millisecond), interval+100*time.Millisecond)
			}
			if _, peak := d.memory(t); peak > maxRSS {
				t.Errorf("%s: the daemon's resident memory peaked at %d MiB, want under %d MiB", h.name, peak>>20, maxRSS>>20)
			} else {
				t.Logf("%s: peak RSS %d MiB", h.name, peak>>20)
			}

			e.set(t, e.candidate, map[string]string{"unhealthy": "false"})
			h.fix(t, e, d)
			step("fixed")
			h.recovered(t, e, d)
			step("recovered")
			d.alive(t)
			waitHTTP(t, d.url+"/healthz", 200)
		})
	}
}

// startNginx starts nginx once the daemon has rendered the files its
// configuration includes.
func (e *env) startNginx(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(e.nginxDir + "/" + e.upstream + ".http.conf"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not render nginx's files")
		}
	}
	e.nginx.Start(t)
}

// breach makes the candidate fail its health check and returns when the
// failure became visible (the first failed check of a probe every 2ms) and
// when the daemon rolled back (its Rollback event).
func (e *env) breach(t *testing.T, d *daemonProc) (visible, rolledBack time.Time) {
	t.Helper()
	var seen atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := &http.Client{Timeout: 200 * time.Millisecond}
		for {
			select {
			case <-stop:
				return
			default:
			}
			at := time.Now()
			res, err := c.Get("http://" + e.candidate.addr + "/health")
			if err == nil {
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					seen.CompareAndSwap(0, at.UnixNano())
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	e.set(t, e.candidate, map[string]string{"unhealthy": "true"})
	m := d.wait(t, "shop", 30*time.Second, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
	close(stop)
	<-done
	rb, err := event(m, "Rollback")
	if err != nil {
		t.Fatal(err)
	}
	if seen.Load() == 0 {
		t.Fatal("the probe never saw the failure")
	}
	return time.Unix(0, seen.Load()), rb.At
}

// TestStopsInBoundedTime: SIGTERM ends the daemon within timeouts.shutdown
// (2s here) plus the 5s the HTTP side gets, even while every call to the
// Git remote and to Prometheus hangs.
func TestStopsInBoundedTime(t *testing.T) {
	e := newEnv(t, map[string]func(*env) string{"shop.yaml": shopPlan(50)})
	d := e.startDaemon(t, "timeouts: {shutdown: 2s}\n")
	e.startNginx(t)
	d.wait(t, "shop", 90*time.Second, "at rest at canary 50%", func(m daemon.Migration) bool { return m.Position == canary50 })
	e.gitProxy.Hang(true)
	e.promProx.Hang(true)
	time.Sleep(3 * time.Second) // a sync and a measurement are hanging now
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop within 30s of SIGTERM")
	}
	took := time.Since(start)
	t.Logf("stopped %s after SIGTERM (exit: %v)", took.Round(time.Millisecond), d.cmd.ProcessState)
	if took > 7*time.Second+500*time.Millisecond {
		t.Errorf("stopping took %s, want within timeouts.shutdown (2s) + 5s", took.Round(time.Millisecond))
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("the daemon exited with %v", d.cmd.ProcessState)
	}
}
