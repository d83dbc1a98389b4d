// Package forge opens pull requests and sets commit statuses through a
// forge's HTTP API: GitHub, GitLab and Gitea (which Forgejo shares). One
// file per forge registers itself by kind; New picks one from a Config,
// naming the kind or inferring it from the repository's URL.
//
// Every call has a deadline (Config.Timeout), reads at most a bounded
// answer, and never logs or returns the token: it is read from a file at
// each call, so a rotated token is picked up without a restart.
package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// PR is a pull (or merge) request to open: from branch Head into Base of
// Repo ("owner/name"; empty: the configured one).
type PR struct {
	Repo  string
	Head  string
	Base  string
	Title string
	Body  string
}

// States of a commit status, as GitHub and Gitea name them (GitLab's
// failed is Failure).
const (
	Pending = "pending"
	Success = "success"
	Failure = "failure"
	Error   = "error"
)

// Status is a commit status: State on Commit under Context (the name a
// forge shows it by and replaces it by), with a short Description and
// a link.
type Status struct {
	Commit      string
	State       string
	Context     string
	Description string
	TargetURL   string
}

// Forge is what hal9-migrate asks of a forge.
type Forge interface {
	// OpenPullRequest opens the pull request and returns its web URL; one
	// already open from the same head into the same base is returned
	// instead of an error.
	OpenPullRequest(ctx context.Context, pr PR) (string, error)
	// SetCommitStatus sets a status on a commit of the configured
	// repository.
	SetCommitStatus(ctx context.Context, s Status) error
	// Kind names the forge: github, gitlab or gitea.
	Kind() string
}

// Config says which forge to talk to and how. Its YAML form is the
// daemon's `forge:` block.
type Config struct {
	// Kind is github, gitlab or gitea (forgejo is gitea); empty: inferred
	// from RepoURL's host.
	Kind string `yaml:"kind"`
	// URL is the forge's base URL (https://gitea.example.com); empty: the
	// public service for github (its API) and gitlab, the repository
	// URL's host for gitea.
	URL string `yaml:"url"`
	// TokenFile holds the API token.
	TokenFile string `yaml:"tokenFile"`
	// Repo is owner/name (a GitLab project's full path); empty: from
	// RepoURL.
	Repo string `yaml:"repo"`
	// Timeout bounds each call (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// StatusURL is the link each commit status carries, "{plan}" replaced
	// by the plan's name: the daemon's status page or its API
	// (https://hal9-migrate.example.com/api/v1/migrations/{plan}); empty:
	// none.
	StatusURL string `yaml:"statusURL"`
	// RepoURL is the plan repository's git URL, from which Kind, URL and
	// Repo are inferred when not set. Not read from YAML.
	RepoURL string `yaml:"-"`
}

// StatusLink is the link of a commit status for plan: StatusURL with
// "{plan}" replaced by its name, escaped as a path segment.
func (c Config) StatusLink(plan string) string {
	if c.StatusURL == "" {
		return ""
	}
	return strings.ReplaceAll(c.StatusURL, "{plan}", url.PathEscape(plan))
}

// Enabled reports whether anything configures a forge.
func (c Config) Enabled() bool { return c.Kind != "" || c.TokenFile != "" || c.URL != "" }

// constructor makes a forge of one kind from a resolved configuration.
type constructor func(c Config, cl *client) Forge

var registry = map[string]constructor{}

// register adds a kind of forge; each forge's file calls it.
func register(kind string, f constructor) { registry[kind] = f }

// Kinds lists the registered kinds.
func Kinds() []string {
	var out []string
	for k := range registry {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// New returns the forge c describes.
func New(c Config) (Forge, error) {
	c, err := resolve(c)
	if err != nil {
		return nil, err
	}
	f, ok := registry[c.Kind]
	if !ok {
		return nil, fmt.Errorf("forge: unknown kind %q (known: %s)", c.Kind, strings.Join(Kinds(), ", "))
	}
	if c.TokenFile == "" {
		return nil, errors.New("forge: tokenFile is required: a file holding the API token")
	}
	if _, err := readToken(c.TokenFile); err != nil {
		return nil, err
	}
	return f(c, &client{http: &http.Client{Timeout: c.Timeout}, timeout: c.Timeout, tokenFile: c.TokenFile}), nil
}

// resolve fills in what c leaves to be inferred.
func resolve(c Config) (Config, error) {
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	host, path := splitRepoURL(c.RepoURL)
	if c.Kind == "" {
		switch {
		case host == "github.com":
			c.Kind = "github"
		case host == "gitlab.com" || strings.HasPrefix(host, "gitlab."):
			c.Kind = "gitlab"
		case strings.HasPrefix(host, "gitea.") || strings.HasPrefix(host, "codeberg.org") || strings.HasPrefix(host, "forgejo."):
			c.Kind = "gitea"
		default:
			return c, fmt.Errorf("forge: kind is not set and cannot be told from the repository URL (host %q): set forge.kind to one of %s", host, strings.Join(Kinds(), ", "))
		}
	}
	if c.StatusURL != "" {
		if u, err := url.Parse(c.StatusURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("forge: statusURL %q is not an http(s) URL", c.StatusURL)
		}
	}
	c.Kind = strings.ToLower(c.Kind)
	if c.Kind == "forgejo" {
		c.Kind = "gitea"
	}
	if c.Repo == "" {
		c.Repo = path
	}
	if c.Repo == "" || !strings.Contains(c.Repo, "/") {
		return c, fmt.Errorf("forge: repo %q is not owner/name: set forge.repo", c.Repo)
	}
	if c.URL == "" {
		switch c.Kind {
		case "github":
			c.URL = "https://api.github.com"
		case "gitlab":
			c.URL = "https://gitlab.com"
			if host != "" {
				c.URL = "https://" + host
			}
		default:
			if host == "" {
				return c, errors.New("forge: url is not set and the repository URL names no host: set forge.url")
			}
			c.URL = "https://" + host
		}
	}
	c.URL = strings.TrimSuffix(c.URL, "/")
	return c, nil
}

// splitRepoURL returns the host and the owner/name path of a git URL:
// https://host/owner/name.git, ssh://git@host:22/owner/name,
// git@host:owner/name.git. Anything else gives empty strings.
func splitRepoURL(s string) (host, path string) {
	if s == "" {
		return "", ""
	}
	if !strings.Contains(s, "://") {
		// scp-like: user@host:path
		at := strings.Index(s, "@")
		colon := strings.Index(s, ":")
		if colon < 0 || at > colon {
			return "", ""
		}
		host, path = s[at+1:colon], s[colon+1:]
	} else {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "file" {
			return "", ""
		}
		host, path = u.Hostname(), u.Path
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	return strings.ToLower(host), path
}

// readToken reads the token file; its content is never put in an error.
func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("forge: read the token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("forge: the token file %s is empty", file)
	}
	return t, nil
}

// maxAnswer bounds what is read of a forge's answer.
const maxAnswer = 1 << 20

// client is the HTTP side the forges share.
type client struct {
	http      *http.Client
	timeout   time.Duration
	tokenFile string
}

// APIError is a forge's answer with a status other than the one expected.
type APIError struct {
	Method, URL string
	Status      int
	Message     string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("forge: %s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Message)
}

// do sends a JSON request (in nil: no body) with the headers auth makes of
// the token, and decodes a 2xx answer into out (nil: ignored).
func (c *client) do(ctx context.Context, method, u string, auth func(h http.Header, token string), in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	token, err := readToken(c.tokenFile)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "hal9-migrate")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	auth(req.Header, token)
	resp, err := c.http.Do(req)
	if err != nil {
		// net/http's errors name the URL, never the headers.
		return fmt.Errorf("forge: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("forge: %s %s: read the answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Method: method, URL: u, Status: resp.StatusCode, Message: message(data)}
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("forge: %s %s: decode the answer: %w", method, u, err)
	}
	return nil
}

// message is what a forge's error answer says, shortened.
func message(data []byte) string {
	var m struct {
		Message any `json:"message"`
		Error   any `json:"error"`
		Errors  any `json:"errors"`
	}
	s := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &m) == nil {
		var parts []string
		for _, v := range []any{m.Message, m.Error, m.Errors} {
			if v != nil {
				b, _ := json.Marshal(v)
				parts = append(parts, strings.Trim(string(b), `"`))
			}
		}
		if len(parts) > 0 {
			s = strings.Join(parts, "; ")
		}
	}
	return clip(s, 300)
}

// clip shortens s to at most n runes, with an ellipsis.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// isStatus reports whether err is a forge's answer with that status.
func isStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// ownerName splits owner/name; a GitLab subgroup path keeps its slashes in
// the owner.
func ownerName(repo string) (owner, name string) {
	i := strings.LastIndex(repo, "/")
	return repo[:i], repo[i+1:]
}

// escapePath escapes each segment of owner/name for a URL path.
func escapePath(repo string) string {
	owner, name := ownerName(repo)
	return url.PathEscape(owner) + "/" + url.PathEscape(name)
}
