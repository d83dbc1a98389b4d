package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// TestForgeHooks: a pull-request promotion opens its pull request once,
// with the plans before and after the move for its body, and says so in
// the status; each migration's progress goes to the commit that moved it
// as a commit status, once per commit and state.
func TestForgeHooks(t *testing.T) {
	r := newRig(t)
	r.d.Propose = func(ctx context.Context, branch string) (Git, error) {
		return gitops.Open(ctx, gitops.Options{URL: r.url, Branch: branch, CreateFrom: "main", Path: "plans", Now: r.clock.Now})
	}
	var prs []PullRequest
	r.d.OpenPullRequest = func(ctx context.Context, pr PullRequest) (string, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the pull request is opened without a deadline")
		}
		prs = append(prs, pr)
		return "https://forge.example/acme/plans/pulls/1", nil
	}
	var sent []string
	failing := true
	r.d.CommitStatus = func(ctx context.Context, s CommitStatus) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the commit status is set without a deadline")
		}
		if failing { // the forge is away once: tried again later
			failing = false
			return fmt.Errorf("forge away")
		}
		sent = append(sent, s.Plan+" "+s.Commit+" "+s.State)
		return nil
	}
	r.person(t, "propose promotions", promoting("pull-request"))
	person := gittest.Git(t, r.remote, "rev-parse", "main")
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
	r.steps(t, 8)

	const branch = "hal9-migrate/promote/base-canary"
	if len(prs) != 1 {
		t.Fatalf("pull requests opened: %d, want 1", len(prs))
	}
	pr := prs[0]
	if pr.Branch != branch || !strings.HasPrefix(pr.Title, "promote(base): base canary 10% → canary") {
		t.Errorf("pull request: branch %s, title %q", pr.Branch, pr.Title)
	}
	if len(pr.Before) != 1 || len(pr.After) != 1 || pr.Before[0].TargetPosition().String() != "canary 10%" ||
		pr.After[0].TargetPosition().Phase != "canary" || pr.After[0].TargetPosition().Percentage == 10 {
		t.Errorf("pull request plans: before %v, after %v", pr.Before, pr.After)
	}
	st := gittest.Git(t, r.remote, "show", "main:status/base.yaml")
	if !strings.Contains(st, "pull request https://forge.example/acme/plans/pulls/1") {
		t.Errorf("the status does not name the pull request:\n%s", st)
	}

	// Statuses: on the person's commit, each (commit, state) once, ending
	// in success at the target.
	seen := map[string]bool{}
	for _, s := range sent {
		if seen[s] {
			t.Errorf("commit status sent twice: %s\nall: %v", s, sent)
		}
		seen[s] = true
		if !strings.Contains(s, " "+person+" ") {
			t.Errorf("commit status on another commit than %s: %s", person, s)
		}
	}
	if !seen["base "+person+" success"] {
		t.Errorf("no success on %s at the target: %v", person, sent)
	}
}

func TestCommitStatusState(t *testing.T) {
	for status, want := range map[string]string{
		reconcile.StatusProgressing: "pending", reconcile.StatusWaiting: "pending",
		reconcile.StatusHolding: "success", reconcile.StatusCompleted: "success",
		reconcile.StatusRolledBack: "failure", reconcile.StatusFrozen: "failure", reconcile.StatusBreached: "failure",
	} {
		if got := commitStatusState(status); got != want {
			t.Errorf("%s: %s, want %s", status, got, want)
		}
	}
}

// TestForgeConfig: the forge block reads as the README shows it.
func TestForgeConfig(t *testing.T) {
	f := t.TempDir() + "/config.yaml"
	gittest.Write(t, f, "repo: https://git.example.com/acme/plans.git\nforge:\n  kind: gitea\n  url: https://git.example.com\n  tokenFile: /run/secrets/forge-token\n  repo: acme/plans\n  timeout: 10s\n")
	c, err := LoadConfig(f, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Forge.Enabled() || c.Forge.Kind != "gitea" || c.Forge.URL != "https://git.example.com" ||
		c.Forge.TokenFile != "/run/secrets/forge-token" || c.Forge.Repo != "acme/plans" || c.Forge.Timeout.String() != "10s" {
		t.Errorf("forge: %+v", c.Forge)
	}
	if c, _ := LoadConfig("", DefaultConfig()); c.Forge.Enabled() {
		t.Errorf("a forge without a forge block: %+v", c.Forge)
	}
}
