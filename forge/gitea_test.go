package forge_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/forge"
	"github.com/hal9ai/hal9-migrate/internal/forgetest"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
)

// TestGitea runs against a real Gitea on 127.0.0.1
// (scripts/forge-testenv.sh): a branch pushed with git, a pull request
// opened from it and read back through the API, the same one found when
// opened again, and commit statuses set and read back.
func TestGitea(t *testing.T) {
	g := forgetest.NewGitea(t)
	ctx := context.Background()
	repo := g.NewRepo(t)
	work := gittest.Clone(t, g.AuthURL(repo))
	gittest.Git(t, work, "checkout", "-q", "-b", "shop-canary-25")
	gittest.Write(t, work+"/plans/shop.yaml", "target: canary 25\n")
	gittest.Git(t, work, "add", "-A")
	gittest.Git(t, work, "commit", "-q", "-m", "migrate(shop): canary 10% → canary 25%")
	gittest.Git(t, work, "push", "-q", "origin", "shop-canary-25")
	commit := gittest.Git(t, work, "rev-parse", "HEAD")

	f, err := forge.New(forge.Config{Kind: "gitea", URL: g.URL, TokenFile: g.TokenFile(t), RepoURL: g.CloneURL(repo)})
	if err != nil {
		t.Fatal(err)
	}
	pr := forge.PR{Head: "shop-canary-25", Base: "main", Title: "migrate(shop): canary 10% → canary 25%",
		Body: "### shop: advances canary 10% → canary 25%\n\n| Step | Position |\n|---:|---|\n| 1 | canary 25% |\n"}
	u, err := f.OpenPullRequest(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, g.URL+repo+"/pulls/") {
		t.Fatalf("pull request URL %s", u)
	}
	index := u[strings.LastIndex(u, "/")+1:]
	var got struct {
		Title, Body, State string
		Head, Base         struct{ Ref string }
	}
	g.API(t, http.MethodGet, "repos/"+repo+"/pulls/"+index, nil, &got)
	if got.Title != pr.Title || got.Body != pr.Body || got.State != "open" || got.Head.Ref != pr.Head || got.Base.Ref != pr.Base {
		t.Errorf("pull request as Gitea has it: %+v", got)
	}
	again, err := f.OpenPullRequest(ctx, pr)
	if err != nil || again != u {
		t.Errorf("opened again: %s, %v; want %s", again, err, u)
	}

	for _, s := range []string{forge.Pending, forge.Success} {
		if err := f.SetCommitStatus(ctx, forge.Status{Commit: commit, State: s, Context: "hal9-migrate/shop",
			Description: "shop " + s, TargetURL: "http://127.0.0.1/status"}); err != nil {
			t.Fatal(err)
		}
	}
	var statuses []struct {
		Status, Context, Description string
		TargetURL                    string `json:"target_url"`
	}
	g.API(t, http.MethodGet, "repos/"+repo+"/commits/"+commit+"/statuses", nil, &statuses)
	if len(statuses) != 2 {
		t.Fatalf("%d statuses: %+v", len(statuses), statuses)
	}
	var combined struct{ State string }
	g.API(t, http.MethodGet, "repos/"+repo+"/commits/"+commit+"/status", nil, &combined)
	if combined.State != "success" {
		t.Errorf("combined state %q after success, statuses %+v", combined.State, statuses)
	}
	for _, s := range statuses {
		if s.Context != "hal9-migrate/shop" || !strings.HasPrefix(s.Description, "shop ") {
			t.Errorf("status %+v", s)
		}
	}

	// A token the forge refuses: an error naming the status, not the token.
	bad := forgetest.Gitea{URL: g.URL, User: g.User, Token: "0000" + strconv.Itoa(len(g.Token))}
	fb, err := forge.New(forge.Config{Kind: "gitea", URL: g.URL, TokenFile: bad.TokenFile(t), Repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fb.OpenPullRequest(ctx, pr); err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), bad.Token) {
		t.Errorf("a refused token: %v", err)
	}
}
