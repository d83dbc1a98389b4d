package forge

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Gitea and Forgejo: REST API v1, pulls and statuses.
//   POST /api/v1/repos/{owner}/{repo}/pulls           {head, base, title, body}
//   GET  /api/v1/repos/{owner}/{repo}/pulls/{base}/{head}
//   POST /api/v1/repos/{owner}/{repo}/statuses/{sha}  {state, context, description, target_url}

func init() {
	register("gitea", func(c Config, cl *client) Forge { return &gitea{c: c, cl: cl} })
}

type gitea struct {
	c  Config
	cl *client
}

func (g *gitea) Kind() string { return "gitea" }

func giteaAuth(h http.Header, token string) { h.Set("Authorization", "token "+token) }

func (g *gitea) repo(r string) string {
	if r == "" {
		r = g.c.Repo
	}
	return g.c.URL + "/api/v1/repos/" + escapePath(r)
}

func (g *gitea) OpenPullRequest(ctx context.Context, pr PR) (string, error) {
	base := g.repo(pr.Repo)
	var out struct {
		HTMLURL string `json:"html_url"`
	}
	err := g.cl.do(ctx, http.MethodPost, base+"/pulls", giteaAuth, map[string]string{
		"head": pr.Head, "base": pr.Base, "title": pr.Title, "body": pr.Body,
	}, &out)
	if isStatus(err, http.StatusConflict) {
		// "pull request already exists for these targets": return it.
		var open struct {
			HTMLURL string `json:"html_url"`
		}
		if lerr := g.cl.do(ctx, http.MethodGet, base+"/pulls/"+url.PathEscape(pr.Base)+"/"+url.PathEscape(pr.Head), giteaAuth, nil, &open); lerr == nil && open.HTMLURL != "" {
			return open.HTMLURL, nil
		}
	}
	if err != nil {
		return "", err
	}
	if out.HTMLURL == "" {
		return "", fmt.Errorf("forge: gitea opened a pull request but named no html_url")
	}
	return out.HTMLURL, nil
}

func (g *gitea) SetCommitStatus(ctx context.Context, s Status) error {
	u := g.repo("") + "/statuses/" + url.PathEscape(s.Commit)
	return g.cl.do(ctx, http.MethodPost, u, giteaAuth, map[string]string{
		"state": s.State, "context": s.Context, "description": clip(s.Description, 255), "target_url": s.TargetURL,
	}, nil)
}
