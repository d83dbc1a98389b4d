package forge

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// GitHub: REST v3, pulls and statuses.
//   POST /repos/{owner}/{repo}/pulls           {title, head, base, body}
//   GET  /repos/{owner}/{repo}/pulls?head=owner:branch&base=…&state=open
//   POST /repos/{owner}/{repo}/statuses/{sha}  {state, target_url, description, context}

func init() {
	register("github", func(c Config, cl *client) Forge { return &github{c: c, cl: cl} })
}

type github struct {
	c  Config
	cl *client
}

func (g *github) Kind() string { return "github" }

func githubAuth(h http.Header, token string) {
	h.Set("Authorization", "Bearer "+token)
	h.Set("Accept", "application/vnd.github+json")
	h.Set("X-GitHub-Api-Version", "2022-11-28")
}

func (g *github) repo(r string) string {
	if r == "" {
		r = g.c.Repo
	}
	return r
}

func (g *github) OpenPullRequest(ctx context.Context, pr PR) (string, error) {
	repo := g.repo(pr.Repo)
	base := g.c.URL + "/repos/" + escapePath(repo) + "/pulls"
	var out struct {
		HTMLURL string `json:"html_url"`
	}
	err := g.cl.do(ctx, http.MethodPost, base, githubAuth,
		map[string]string{"title": pr.Title, "head": pr.Head, "base": pr.Base, "body": pr.Body}, &out)
	if isStatus(err, http.StatusUnprocessableEntity) {
		// "A pull request already exists": return that one.
		owner, _ := ownerName(repo)
		q := url.Values{"head": {owner + ":" + pr.Head}, "base": {pr.Base}, "state": {"open"}}
		var open []struct {
			HTMLURL string `json:"html_url"`
		}
		if lerr := g.cl.do(ctx, http.MethodGet, base+"?"+q.Encode(), githubAuth, nil, &open); lerr == nil && len(open) > 0 {
			return open[0].HTMLURL, nil
		}
	}
	if err != nil {
		return "", err
	}
	if out.HTMLURL == "" {
		return "", fmt.Errorf("forge: github opened a pull request but named no html_url")
	}
	return out.HTMLURL, nil
}

func (g *github) SetCommitStatus(ctx context.Context, s Status) error {
	u := g.c.URL + "/repos/" + escapePath(g.c.Repo) + "/statuses/" + url.PathEscape(s.Commit)
	return g.cl.do(ctx, http.MethodPost, u, githubAuth, map[string]string{
		"state": s.State, "target_url": s.TargetURL, "description": clip(s.Description, 140), "context": s.Context,
	}, nil)
}
