package forge

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// GitLab: REST v4, merge requests and commit statuses. The project is
// named by its full path, URL-encoded.
//   POST /api/v4/projects/:id/merge_requests  {source_branch, target_branch, title, description}
//   GET  /api/v4/projects/:id/merge_requests?source_branch=…&target_branch=…&state=opened
//   POST /api/v4/projects/:id/statuses/:sha   {state, name, description, target_url}

func init() {
	register("gitlab", func(c Config, cl *client) Forge { return &gitlab{c: c, cl: cl} })
}

type gitlab struct {
	c  Config
	cl *client
}

func (g *gitlab) Kind() string { return "gitlab" }

func gitlabAuth(h http.Header, token string) { h.Set("PRIVATE-TOKEN", token) }

func (g *gitlab) project(r string) string {
	if r == "" {
		r = g.c.Repo
	}
	return g.c.URL + "/api/v4/projects/" + url.PathEscape(r)
}

func (g *gitlab) OpenPullRequest(ctx context.Context, pr PR) (string, error) {
	base := g.project(pr.Repo) + "/merge_requests"
	var out struct {
		WebURL string `json:"web_url"`
	}
	err := g.cl.do(ctx, http.MethodPost, base, gitlabAuth, map[string]string{
		"source_branch": pr.Head, "target_branch": pr.Base, "title": pr.Title, "description": pr.Body,
	}, &out)
	if isStatus(err, http.StatusConflict) {
		// "Another open merge request already exists for this source branch".
		q := url.Values{"source_branch": {pr.Head}, "target_branch": {pr.Base}, "state": {"opened"}}
		var open []struct {
			WebURL string `json:"web_url"`
		}
		if lerr := g.cl.do(ctx, http.MethodGet, base+"?"+q.Encode(), gitlabAuth, nil, &open); lerr == nil && len(open) > 0 {
			return open[0].WebURL, nil
		}
	}
	if err != nil {
		return "", err
	}
	if out.WebURL == "" {
		return "", fmt.Errorf("forge: gitlab opened a merge request but named no web_url")
	}
	return out.WebURL, nil
}

// gitlabStates maps the states GitHub names to GitLab's.
var gitlabStates = map[string]string{Pending: "running", Success: "success", Failure: "failed", Error: "failed"}

func (g *gitlab) SetCommitStatus(ctx context.Context, s Status) error {
	state, ok := gitlabStates[s.State]
	if !ok {
		return fmt.Errorf("forge: unknown commit status state %q", s.State)
	}
	u := g.project("") + "/statuses/" + url.PathEscape(s.Commit)
	return g.cl.do(ctx, http.MethodPost, u, gitlabAuth, map[string]string{
		"state": state, "name": s.Context, "description": clip(s.Description, 255), "target_url": s.TargetURL,
	}, nil)
}
