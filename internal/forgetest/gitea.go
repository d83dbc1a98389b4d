package forgetest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// Gitea is a real Gitea server on 127.0.0.1, started by
// scripts/forge-testenv.sh (which scripts/test-env.sh runs), as an admin
// user with an API token.
type Gitea struct {
	URL   string // with a trailing slash
	User  string
	Token string
}

// NewGitea returns the Gitea named by HAL9_TEST_GITEA_URL, _USER and
// _TOKEN; without them the test skips, or fails in CI.
func NewGitea(t testing.TB) *Gitea {
	t.Helper()
	g := &Gitea{URL: os.Getenv("HAL9_TEST_GITEA_URL"), User: os.Getenv("HAL9_TEST_GITEA_USER"), Token: os.Getenv("HAL9_TEST_GITEA_TOKEN")}
	if g.URL == "" || g.User == "" || g.Token == "" {
		testenv.Missing(t, "no Gitea: HAL9_TEST_GITEA_URL, HAL9_TEST_GITEA_USER and HAL9_TEST_GITEA_TOKEN are not set (eval \"$(scripts/forge-testenv.sh env)\", or run through scripts/test-env.sh)")
	}
	if !strings.HasSuffix(g.URL, "/") {
		g.URL += "/"
	}
	return g
}

// TokenFile writes the token to a file of the test's and returns it.
func (g *Gitea) TokenFile(t testing.TB) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "gitea-token")
	if err := os.WriteFile(f, []byte(g.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// NewRepo creates a repository of its own for the test (a main branch with
// a README) and returns its owner/name.
func (g *Gitea) NewRepo(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d", time.Now().UnixNano())
	g.API(t, http.MethodPost, "user/repos", map[string]any{"name": name, "auto_init": true, "default_branch": "main"}, nil)
	return g.User + "/" + name
}

// CloneURL is the repository's git URL over HTTP, without credentials.
func (g *Gitea) CloneURL(repo string) string { return g.URL + repo + ".git" }

// AuthURL is the repository's git URL with the token in it, for the git
// CLI.
func (g *Gitea) AuthURL(repo string) string {
	return strings.Replace(g.CloneURL(repo), "://", "://"+g.User+":"+g.Token+"@", 1)
}

// PutFile commits a file on the repository's main branch through the API.
func (g *Gitea) PutFile(t testing.TB, repo, path, content string) {
	t.Helper()
	g.API(t, http.MethodPost, "repos/"+repo+"/contents/"+path, map[string]any{
		"content": base64.StdEncoding.EncodeToString([]byte(content)), "branch": "main", "message": "add " + path,
	}, nil)
}

// API calls the API (path relative to /api/v1/) and decodes the answer
// into out; any status but 2xx fails the test.
func (g *Gitea) API(t testing.TB, method, path string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g.URL+"api/v1/"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "token "+g.Token)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("gitea %s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("gitea %s %s: %v: %s", method, path, err, data)
		}
	}
}
