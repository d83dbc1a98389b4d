package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreCheckAndVerify runs pre-check and verify against a live daemon.
func TestPreCheckAndVerify(t *testing.T) {
	l := liveDaemon(t, "t0ken")
	t.Setenv("HAL9_MIGRATE_DAEMON", l.url)

	// Without the token, pre-check says why it needs one, and --last
	// has nothing to show yet.
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "")
	if out, err := run(t, "pre-check"); err == nil || !strings.Contains(err.Error(), "with its own credentials (--last shows the last result without a token): give its API token") ||
		!strings.Contains(err.Error(), "--api-token-file") || !strings.Contains(err.Error(), "--last") {
		t.Errorf("pre-check without a token: %v\n%s", err, out)
	}
	if out, err := run(t, "pre-check", "--last"); err == nil || !strings.Contains(err.Error(), "no pre-check has run") {
		t.Errorf("pre-check --last before any: %v\n%s", err, out)
	}
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "t0ken")

	// The live daemon has no Prometheus, and the plan queries it.
	out, err := run(t, "pre-check")
	if err != errReported || !strings.Contains(out, "✗  prometheus  server") || !strings.Contains(out, "✓  driver      base: observe") || !strings.HasSuffix(out, "pre-check failed\n") {
		t.Errorf("pre-check: %v\n%s", err, out)
	}
	out, err = run(t, "pre-check", "--components", "git", "workloads")
	if err != nil || strings.Contains(out, "prometheus") || !strings.HasSuffix(out, "pre-check passed\n") {
		t.Errorf("pre-check of git and workloads: %v\n%s", err, out)
	}
	// The last result, which needs no token.
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "")
	out, err = run(t, "pre-check", "--last")
	if err != nil || !strings.HasPrefix(out, "the last pre-check ran at ") || !strings.Contains(out, "✓  workloads") || !strings.HasSuffix(out, "pre-check passed\n") {
		t.Errorf("pre-check --last: %v\n%s", err, out)
	}
	if out, err := run(t, "pre-check", "--last", "-o", "json"); err != nil || !strings.Contains(out, `"at": "`) || !strings.Contains(out, `"components": [`) {
		t.Errorf("pre-check --last -o json: %v\n%s", err, out)
	}
	if _, err := run(t, "pre-check", "--last", "--deep"); err == nil || !strings.Contains(err.Error(), "--last shows the last result as it is") {
		t.Errorf("pre-check --last --deep: %v", err)
	}
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "t0ken")
	if out, err := run(t, "pre-check", "--components", "dns"); err == nil || !strings.Contains(err.Error(), `unknown component \"dns\"`) && !strings.Contains(err.Error(), `unknown component "dns"`) {
		t.Errorf("unknown component: %v\n%s", err, out)
	}

	if _, err := run(t, "verify"); err == nil || !strings.Contains(err.Error(), "--tests") {
		t.Errorf("verify with nothing named: %v", err)
	}
	out, err = run(t, "verify", "--tests", "integrity")
	if err != nil || !strings.HasPrefix(out, "✓ integrity (run, ") {
		t.Errorf("verify: %v\n%s", err, out)
	}
	report := filepath.Join(t.TempDir(), "report.md")
	if out, err := run(t, "verify", "--full", "--report", "--report-file", report); err != nil {
		t.Errorf("verify --full --report: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(report)
	if !strings.HasPrefix(string(b), "# Verification of base: passed\n") || !strings.Contains(string(b), "| integrity | run | pass |") {
		t.Errorf("report:\n%s", b)
	}
	if _, err := run(t, "verify", "--tests", "nope"); err == nil || !strings.Contains(err.Error(), "has no check") {
		t.Errorf("unknown check: %v", err)
	}
}

// TestVerifyNothing runs verify --full on a plan with no checks: it says
// there was nothing to verify, never that anything passed, and exits 0.
func TestVerifyNothing(t *testing.T) {
	base := basePlan(t)
	plan := strings.Replace(base, "      verify: [integrity]\n", "", 1)
	plan = strings.Replace(plan, "  verify:\n    integrity: {run: {image: \"migrator:1\", command: [check]}}\n", "", 1)
	if strings.Contains(plan, "verify") {
		t.Fatalf("the plan still has checks:\n%s", plan)
	}
	l := liveDaemonOf(t, "t0ken", plan)
	t.Setenv("HAL9_MIGRATE_DAEMON", l.url)
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "t0ken")

	const why = "the plan of base has no checks (spec.verify is empty), so nothing was run"
	out, err := run(t, "verify", "--full")
	if err != nil || out != "nothing to verify: "+why+"\n" {
		t.Errorf("verify --full: %v\n%s", err, out)
	}
	out, err = run(t, "verify", "--full", "--report")
	if err != nil || !strings.HasPrefix(out, "# Verification of base: nothing to verify\n\nRun ") ||
		!strings.HasSuffix(out, ": "+why+".\n") || strings.Contains(out, "passed") || strings.Contains(out, "| check |") {
		t.Errorf("verify --full --report: %v\n%s", err, out)
	}
}
