package forge_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/forge"
	"github.com/hal9ai/hal9-migrate/internal/forgetest"
)

// GitHub and GitLab cannot run on this machine or in CI, so these tests
// run against RECORDED API EXCHANGES, not the real services: an httptest
// server replays the request/response pairs in testdata/github.json and
// testdata/gitlab.json, in order, and fails on any request whose method,
// path, headers or JSON body differ from the recorded one. Gitea, which
// does run here, is tested for real in gitea_test.go. The exchanges were
// written from each forge's REST reference (paths, headers, bodies and
// answers, errors included), not captured from the live services, which
// this machine cannot reach.

const (
	commit = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
	token  = "s3cret-token-value"
)

func tokenFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// exercise opens the same pull request twice (the second finds the first)
// and sets a status, then one the forge refuses.
func exercise(t *testing.T, f forge.Forge, wantURL string) {
	t.Helper()
	ctx := context.Background()
	pr := forge.PR{Head: "shop-canary-25", Base: "main", Title: "migrate(shop): canary 10% → canary 25%",
		Body: "### shop: advances canary 10% → canary 25%\n"}
	for i := range 2 {
		u, err := f.OpenPullRequest(ctx, pr)
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		if u != wantURL {
			t.Errorf("open #%d: %s, want %s", i+1, u, wantURL)
		}
	}
	if err := f.SetCommitStatus(ctx, forge.Status{Commit: commit, State: forge.Pending, Context: "hal9-migrate/shop",
		Description: "Progressing at canary 10%, target canary 25%"}); err != nil {
		t.Fatal(err)
	}
	err := f.SetCommitStatus(ctx, forge.Status{Commit: commit, State: forge.Failure, Context: "hal9-migrate/shop",
		Description: strings.Repeat("rolled back ", 30)})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a refused status: %v", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("the error shows the token: %v", err)
	}
}

func TestGitHubRecorded(t *testing.T) {
	r := forgetest.NewReplay(t, "testdata/github.json", token)
	f, err := forge.New(forge.Config{URL: r.URL, TokenFile: tokenFile(t), RepoURL: "git@github.com:acme/plans.git"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind() != "github" {
		t.Fatalf("kind %s told from a github.com URL", f.Kind())
	}
	exercise(t, f, "https://github.com/acme/plans/pull/42")
	// GitHub keeps 140 characters of a description.
	if d := r.Bodies[len(r.Bodies)-1]["description"].(string); len([]rune(d)) != 140 {
		t.Errorf("description of %d characters sent", len([]rune(d)))
	}
}

func TestGitLabRecorded(t *testing.T) {
	r := forgetest.NewReplay(t, "testdata/gitlab.json", token)
	f, err := forge.New(forge.Config{Kind: "gitlab", URL: r.URL + "/", TokenFile: tokenFile(t),
		RepoURL: "https://gitlab.example.com/acme/platform/plans.git"})
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, f, "https://gitlab.example.com/acme/platform/plans/-/merge_requests/7")
}

// TestConfig checks what New infers from a repository URL and what it
// refuses.
func TestConfig(t *testing.T) {
	tf := tokenFile(t)
	for _, tt := range []struct {
		c    forge.Config
		want string // the kind, or the error's start
	}{
		{forge.Config{RepoURL: "https://github.com/acme/plans"}, "github"},
		{forge.Config{RepoURL: "ssh://git@gitlab.com/acme/sub/plans.git"}, "gitlab"},
		{forge.Config{Kind: "forgejo", RepoURL: "https://code.example.com/acme/plans.git"}, "gitea"},
		{forge.Config{RepoURL: "https://code.example.com/acme/plans.git"}, "error: forge: kind is not set"},
		{forge.Config{Kind: "gitea", RepoURL: "/srv/plans"}, "error: forge: repo \"\" is not owner/name"},
		{forge.Config{Kind: "gitea", Repo: "acme/plans"}, "error: forge: url is not set"},
		{forge.Config{Kind: "bitbucket", Repo: "acme/plans", URL: "https://x"}, "error: forge: unknown kind \"bitbucket\""},
		{forge.Config{Kind: "gitea", Repo: "acme/plans", URL: "https://x", StatusURL: "/api/v1/migrations/{plan}"}, "error: forge: statusURL \"/api/v1/migrations/{plan}\" is not an http(s) URL"},
		{forge.Config{Kind: "gitea", Repo: "acme/plans", URL: "https://x", StatusURL: "https://hal9.example.com/{plan}"}, "gitea"},
	} {
		tt.c.TokenFile = tf
		f, err := forge.New(tt.c)
		got := "error: "
		if err == nil {
			got = f.Kind()
		} else {
			got += err.Error()
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%+v: %s, want %s", tt.c, got, tt.want)
		}
	}
	if got := (forge.Config{StatusURL: "https://hal9.example.com/m/{plan}"}).StatusLink("shop a/b"); got != "https://hal9.example.com/m/shop%20a%2Fb" {
		t.Errorf("StatusLink = %s", got)
	}
	if _, err := forge.New(forge.Config{Kind: "github", Repo: "a/b"}); err == nil || !strings.Contains(err.Error(), "tokenFile") {
		t.Errorf("no token file: %v", err)
	}
}
