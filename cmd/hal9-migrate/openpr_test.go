package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/forge"
	"github.com/hal9ai/hal9-migrate/internal/forgetest"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/internal/testenv"
	"github.com/hal9ai/hal9-migrate/plan"
)

const openPRPlan = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target:
    phase: canary
    percentage: 10
  driver:
    docker:
      stable: {service: shop-v1}
      candidate: {service: shop-v2}
  phases:
    - name: canary
      steps: [10, 25, 35]
      soak: 1h
    - name: full
      steps: [100]
`

// TestMigrateOpenPRGitHub runs migrate --open-pr against GitHub's API as
// RECORDED EXCHANGES (GitHub cannot run here; the same command against a
// real Gitea is TestMigrateOpenPRGitea): the branch is pushed, and the
// pull request is asked for from it into main with the plan diff as body.
func TestMigrateOpenPRGitHub(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "git is not installed (apt-get install git)")
	}
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	const token = "ghp_recorded"
	r := forgetest.NewReplay(t, "testdata/forge/github-open-pr.json", token)
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	if err := os.WriteFile(tf, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	bare := gittest.Bare(t, dir, "plans", map[string]string{"plans/shop.yaml": openPRPlan})

	// --open-pr needs a branch to open the pull request from.
	if out, err := run(t, "migrate", "--repo", bare, "--phase", "canary", "--percentage", "25", "--open-pr"); err == nil || !strings.Contains(err.Error(), "--open-pr needs --branch") {
		t.Fatalf("without --branch: %v\n%s", err, out)
	}

	out, err := run(t, "migrate", "--repo", bare, "--branch", "shop-canary-25", "--phase", "canary", "--percentage", "25", "--yes",
		"--open-pr", "--forge", "github", "--forge-url", r.URL, "--forge-repo", "acme/plans", "--forge-token-file", tf)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "opened pull request https://github.com/acme/plans/pull/43\n") {
		t.Errorf("output does not name the pull request:\n%s", out)
	}
	if strings.Contains(out, token) {
		t.Errorf("output shows the token:\n%s", out)
	}
	if got := gittest.Git(t, bare, "log", "-1", "--format=%s", "shop-canary-25"); got != "migrate(shop): canary 10% → canary 25%" {
		t.Errorf("branch shop-canary-25 on the remote: %q", got)
	}
	if len(r.Bodies) != 1 {
		t.Fatalf("%d requests with a body", len(r.Bodies))
	}
	body, _ := r.Bodies[0]["body"].(string)
	for _, want := range []string{
		"### shop: ",
		"canary 10% → canary 25%",
		"| Step | Position | Soak | On entering | Before leaving |",
		"`plans/shop.yaml`",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("pull request body lacks %q:\n%s", want, body)
		}
	}
}

// TestMigrateOpenPRGitea runs migrate --open-pr against a real Gitea on
// 127.0.0.1 and reads the pull request back through its API.
func TestMigrateOpenPRGitea(t *testing.T) {
	g := forgetest.NewGitea(t)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	repo := g.NewRepo(t)
	g.PutFile(t, repo, "plans/shop.yaml", openPRPlan)
	tf := g.TokenFile(t)
	out, err := run(t, "migrate", "--repo", g.CloneURL(repo), "--token-file", tf, "--branch", "shop-canary-25",
		"--phase", "canary", "--percentage", "25", "--yes", "--open-pr", "--forge", "gitea", "--forge-url", g.URL)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	i := strings.Index(out, "opened pull request ")
	if i < 0 {
		t.Fatalf("no pull request named:\n%s", out)
	}
	u := strings.TrimSpace(out[i+len("opened pull request "):])
	var pr struct {
		Title, Body, State string
		Head, Base         struct{ Ref string }
	}
	g.API(t, http.MethodGet, "repos/"+repo+"/pulls/"+u[strings.LastIndex(u, "/")+1:], nil, &pr)
	if pr.Title != "migrate(shop): canary 10% → canary 25%" || pr.Head.Ref != "shop-canary-25" || pr.Base.Ref != "main" || pr.State != "open" {
		t.Errorf("pull request: %+v", pr)
	}
	if !strings.Contains(pr.Body, "### shop: ") || !strings.Contains(pr.Body, "| Step | Position | Soak | On entering | Before leaving |") {
		t.Errorf("pull request body:\n%s", pr.Body)
	}
	// Rolling back opens a pull request too, from another branch.
	out, err = run(t, "rollback", "--repo", g.CloneURL(repo), "--token-file", tf, "--branch", "shop-back",
		"--from", "shop-canary-25", "--base", "main", "--yes", "--open-pr", "--forge", "gitea", "--forge-url", g.URL)
	if err != nil || !strings.Contains(out, "opened pull request "+g.URL+repo+"/pulls/") {
		t.Fatalf("rollback --open-pr: %v\n%s", err, out)
	}
}

// TestDaemonForgeGitea wires a daemon's forge block to a real Gitea and
// calls the hooks as a pull-request promotion and a migration's progress
// would: the pull request carries the plan diff, the status reads back.
func TestDaemonForgeGitea(t *testing.T) {
	g := forgetest.NewGitea(t)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	repo := g.NewRepo(t)
	g.PutFile(t, repo, "plans/shop.yaml", openPRPlan)
	work := gittest.Clone(t, g.AuthURL(repo))
	gittest.Git(t, work, "checkout", "-q", "-b", "hal9-migrate/promote/shop-full")
	gittest.Write(t, work+"/plans/shop.yaml", strings.Replace(openPRPlan, "phase: canary\n    percentage: 10", "phase: full", 1))
	gittest.Git(t, work, "commit", "-q", "-am", "promote(shop): shop canary 10% → full")
	gittest.Git(t, work, "push", "-q", "origin", "hal9-migrate/promote/shop-full")
	commit := gittest.Git(t, work, "rev-parse", "main")

	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	before, err := v.ValidateOne(plan.Source{Path: "plans/shop.yaml", Data: []byte(openPRPlan)})
	if err != nil {
		t.Fatal(err)
	}
	after, err := v.ValidateOne(plan.Source{Path: "plans/shop.yaml", Data: []byte(strings.Replace(openPRPlan, "phase: canary\n    percentage: 10", "phase: full", 1))})
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.DefaultConfig()
	cfg.Repo, cfg.Branch = g.CloneURL(repo), "main"
	cfg.Forge = forge.Config{Kind: "gitea", URL: g.URL, TokenFile: g.TokenFile(t), StatusURL: "https://hal9.example.com/api/v1/migrations/{plan}"}
	d := &daemon.Daemon{}
	if err := wireForge(d, cfg); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u, err := d.OpenPullRequest(ctx, daemon.PullRequest{Branch: "hal9-migrate/promote/shop-full",
		Message: "promote(shop): shop canary 10% → full\n\nshop: held canary 10% for 1h.", Before: []*plan.Plan{before}, After: []*plan.Plan{after}})
	if err != nil {
		t.Fatal(err)
	}
	var pr struct{ Title, Body string }
	g.API(t, http.MethodGet, "repos/"+repo+"/pulls/"+u[strings.LastIndex(u, "/")+1:], nil, &pr)
	if pr.Title != "promote(shop): shop canary 10% → full" || !strings.Contains(pr.Body, "### shop: ") ||
		!strings.Contains(pr.Body, "shop: held canary 10% for 1h.") {
		t.Errorf("pull request: %+v", pr)
	}
	if err := d.CommitStatus(ctx, daemon.CommitStatus{Plan: "shop", Commit: commit, State: "failure", Description: "RolledBack at canary 10%"}); err != nil {
		t.Fatal(err)
	}
	var st []struct {
		Status, Context, Description string
		TargetURL                    string `json:"target_url"`
	}
	g.API(t, http.MethodGet, "repos/"+repo+"/commits/"+commit+"/statuses", nil, &st)
	if len(st) != 1 || st[0].Status != "failure" || st[0].Context != "hal9-migrate/shop" || st[0].Description != "RolledBack at canary 10%" ||
		st[0].TargetURL != "https://hal9.example.com/api/v1/migrations/shop" {
		t.Errorf("statuses: %+v", st)
	}
}
