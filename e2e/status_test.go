package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// fiveSteps is a plan walking five canary steps of 6s each.
func fiveSteps(e *env) string {
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target: {phase: canary}
  driver:
    docker:
      stable: {container: %s}
      candidate: {container: %s}
      traffic: {nginx: {upstream: %s}}
  phases:
    - name: canary
      steps: [10, 20, 30, 40, 50]
      soak: 6s
  guardrails:
    - name: health
      http: {url: 'http://%s/health', timeout: 500ms}
      failures: 2
`, e.stable.name, e.candidate.name, e.upstream, e.candidate.addr)
}

// statusCommits counts the daemon's status commits on a branch, and fails
// the test when two in a row commit the same status.
func (e *env) statusCommits(t *testing.T, branch string) int {
	t.Helper()
	out := gittest.Git(t, e.remote, "log", "--format=%H %s", branch, "--")
	n, last, lastHash := 0, "", ""
	for _, l := range strings.Split(out, "\n") {
		hash, subject, _ := strings.Cut(l, " ")
		if !strings.HasPrefix(subject, "status: ") {
			continue
		}
		if subject == last {
			// The same subject over another content is a state that
			// changed only its reason (a move retried after its apply
			// failed); the same content twice is the waste.
			diff := gittest.Git(t, e.remote, "diff", hash, lastHash, "--", "status/")
			if strings.TrimSpace(diff) == "" {
				t.Errorf("two status commits in a row commit the same status, %q", subject)
			} else {
				t.Logf("two status commits in a row say %q; what changed:\n%s", subject, diff)
			}
		}
		n, last, lastHash = n+1, subject, hash
	}
	return n
}

// TestStatusCommits: a plan walking five steps of 6s commits its progress
// at most once per statusInterval, and nothing of it to the tracked branch
// with a status branch; the migration's end goes out at once. Committing
// every transition (statusInterval 1ns, what the daemon did before it
// coalesced) is measured beside it.
func TestStatusCommits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, config string
		branch       string // where the status commits go
		most         int    // on that branch, over the walk and 20s after
	}{
		{"every transition", "statusInterval: 1ns\n", "main", 100},
		{"coalesced", "statusInterval: 1m\n", "main", 3},
		{"status branch", "statusInterval: 1m\nstatusBranch: hal9-status\n", "hal9-status", 3},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			e := newEnv(t, map[string]func(*env) string{"shop.yaml": fiveSteps})
			start := time.Now()
			d := e.startDaemon(t, tc.config)
			e.startNginx(t)
			d.wait(t, "shop", 2*time.Minute, "the walk to canary 50%", func(m daemon.Migration) bool {
				return m.Position == (plan.Position{Phase: "canary", Percentage: 50}) && m.State == "Completed"
			})
			time.Sleep(20 * time.Second)
			took := time.Since(start)
			n := e.statusCommits(t, tc.branch)
			onMain := e.statusCommits(t, "main")
			perHour := float64(n) / took.Hours()
			t.Logf("%s: %d status commits in %s (%.0f an hour); %d on main", tc.name, n, took.Round(time.Second), perHour, onMain)
			if n > tc.most {
				t.Errorf("%s: %d status commits, want at most %d", tc.name, n, tc.most)
			}
			if tc.branch != "main" && onMain != 0 {
				t.Errorf("%s: %d status commits on main, want none", tc.name, onMain)
			}
			if s := gittest.Git(t, e.remote, "show", tc.branch+":status/shop.yaml"); !strings.Contains(s, "state: Completed") ||
				!strings.Contains(s, "percentage: "+strconv.Itoa(50)) {
				t.Errorf("%s: the status file does not say where the migration ended:\n%s", tc.name, s)
			}
		})
	}
}
