package gitops

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
)

var daemon = Signature{Name: "hal9-migrate", Email: "hal9-migrate@example.com"}

var initialFiles = map[string]string{
	"plans/hal9.yaml":        planYAML("hal9", "canary", 10),
	"plans/small/other.json": `{"apiVersion": "migrate.hal9.ai/v1"}`,
	"plans/notes.txt":        "not a plan",
	"plans/.drafts/wip.yaml": "hidden",
	"status/hal9.yaml":       "phase: canary\n",
	"README.md":              "plans live in plans/\n",
	"examples/plan/dev.yaml": "outside the plans path",
}

// transports serves the bare repository name under base in every way Repo
// can reach it on this machine.
func transports(t *testing.T, base, name string) map[string]string {
	return map[string]string{
		"git":   gitDaemon(t, base) + name,
		"http":  httpServer(t, base) + name,
		"file":  "file://" + filepath.Join(base, name),
		"local": filepath.Join(base, name),
	}
}

// remote is a bare repository and the URL a transport reaches it by.
type remote struct{ dir, url string }

// perTransport makes one bare repository with files for each transport, so
// that subtests do not see each other's commits.
func perTransport(t *testing.T, files map[string]string) map[string]remote {
	base := t.TempDir()
	git, http := gitDaemon(t, base), httpServer(t, base)
	out := map[string]remote{}
	for name, prefix := range map[string]string{"git": git, "http": http, "file": "file://" + base + "/", "local": base + "/"} {
		dir := bare(t, base, name+".git", files)
		out[name] = remote{dir: dir, url: prefix + name + ".git"}
	}
	return out
}

func TestSyncCommitOverTransports(t *testing.T) {
	needGit(t)
	for name, rem := range perTransport(t, initialFiles) {
		t.Run(name, func(t *testing.T) {
			dir, url := rem.dir, rem.url
			ctx := testContext(t, time.Minute)
			r, err := Open(ctx, Options{URL: url})
			if err != nil {
				t.Fatal(err)
			}

			// The first Sync fetches and returns the plan files.
			s, err := r.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			head := run(t, dir, "rev-parse", "main")
			if string(s.Commit) != head || !s.Changed || s.Own {
				t.Fatalf("first Sync = %s changed=%v own=%v, want %s changed own=false", s.Commit, s.Changed, s.Own, head)
			}
			if s.Author != (Signature{"Person", "person@example.com"}) || s.Message != "initial plans\n" || s.Time.IsZero() {
				t.Errorf("first Sync: author %v message %q time %v", s.Author, s.Message, s.Time)
			}
			want := []plan.Source{
				{Path: "plans/hal9.yaml", Data: []byte(initialFiles["plans/hal9.yaml"]), Discovered: true},
				{Path: "plans/small/other.json", Data: []byte(initialFiles["plans/small/other.json"]), Discovered: true},
			}
			if !sameSources(s.Files, want) {
				t.Fatalf("Files = %v, want %v", paths(s.Files), paths(want))
			}

			// An unchanged head: Changed false, same snapshot.
			s2, err := r.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s2.Changed || s2.Commit != s.Commit || !sameSources(s2.Files, want) {
				t.Fatalf("second Sync = %s changed=%v, want %s unchanged", s2.Commit, s2.Changed, s.Commit)
			}

			// A person pushes: Head sees it, Sync returns it.
			person := clonePerson(t, dir)
			writeFile(t, filepath.Join(person, "plans/hal9.yaml"), planYAML("hal9", "canary", 25))
			run(t, person, "commit", "-q", "-am", "canary to 25%")
			run(t, person, "push", "-q", "origin", "main")
			pushed := run(t, person, "rev-parse", "HEAD")
			if h, err := r.Head(ctx); err != nil || string(h) != pushed {
				t.Fatalf("Head = %s, %v; want %s", h, err, pushed)
			}
			s3, err := r.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(s3.Commit) != pushed || !s3.Changed || s3.Own || !strings.Contains(string(s3.Files[0].Data), "percentage: 25") {
				t.Fatalf("Sync after a push = %s changed=%v own=%v", s3.Commit, s3.Changed, s3.Own)
			}

			// The daemon commits a status file.
			status := "phase: canary\npercentage: 25\n"
			h, err := r.Commit(ctx, CommitRequest{
				Message:  "status: hal9 at canary 25%",
				Author:   daemon,
				Trailers: map[string]string{"Hal9-Migrate-Plan": "hal9"},
				Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
					return map[string][]byte{"status/hal9.yaml": []byte(status)}, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, dir, "rev-parse", "main"); got != string(h) {
				t.Fatalf("remote main = %s, Commit returned %s", got, h)
			}
			if got := run(t, dir, "show", "main:status/hal9.yaml"); got != strings.TrimSpace(status) {
				t.Errorf("status file = %q", got)
			}
			if got := run(t, dir, "log", "-1", "--format=%P", "main"); got != pushed {
				t.Errorf("parent = %s, want %s", got, pushed)
			}
			if got := run(t, dir, "show", "--format=", "--name-only", "main"); got != "status/hal9.yaml" {
				t.Errorf("changed files = %q", got)
			}
			trailers := run(t, dir, "log", "-1", "--format=%(trailers:only,unfold)", "main")
			if trailers != "Hal9-Migrate-Bot: true\nHal9-Migrate-Plan: hal9" {
				t.Errorf("trailers as git reads them = %q", trailers)
			}
			if got := run(t, dir, "log", "-1", "--format=%an <%ae>", "main"); got != "hal9-migrate <hal9-migrate@example.com>" {
				t.Errorf("author = %s", got)
			}
			run(t, dir, "fsck", "--strict")

			// Sync sees the daemon's own commit as own, without a fetch.
			s4, err := r.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s4.Commit != h || !s4.Changed || !s4.Own {
				t.Fatalf("Sync after Commit = %s changed=%v own=%v, want %s own", s4.Commit, s4.Changed, s4.Own, h)
			}

			// The same content again is no commit at all.
			h2, err := r.Commit(ctx, CommitRequest{
				Message: "status again", Author: daemon,
				Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
					return map[string][]byte{"status/hal9.yaml": []byte(status)}, nil
				},
			})
			if err != nil || h2 != h {
				t.Fatalf("no-op Commit = %s, %v; want %s", h2, err, h)
			}
			if n := run(t, dir, "rev-list", "--count", "main"); n != "3" {
				t.Errorf("%s commits on main, want 3", n)
			}
		})
	}
}

// clonePerson clones the bare repository as a person would, with the git
// CLI, and returns the working tree.
func clonePerson(tb testing.TB, remote string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "person")
	run(tb, filepath.Dir(dir), "clone", "-q", remote, dir)
	return dir
}

func sameSources(a, b []plan.Source) bool {
	return slices.EqualFunc(a, b, func(x, y plan.Source) bool {
		return x.Path == y.Path && string(x.Data) == string(y.Data) && x.Discovered == y.Discovered
	})
}

func paths(s []plan.Source) []string {
	var out []string
	for _, f := range s {
		out = append(out, f.Path)
	}
	return out
}

func TestSyncPathOptions(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	ctx := testContext(t, time.Minute)
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"", []string{"plans/hal9.yaml", "plans/small/other.json"}},
		{"plans/small", []string{"plans/small/other.json"}},
		{"plans/hal9.yaml", []string{"plans/hal9.yaml"}},
		{"plans/notes.txt", nil},
		{"nowhere", nil},
		{".", []string{"examples/plan/dev.yaml", "plans/hal9.yaml", "plans/small/other.json", "status/hal9.yaml"}},
	} {
		r, err := Open(ctx, Options{URL: dir, Path: tc.path})
		if err != nil {
			t.Fatal(err)
		}
		s, err := r.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := paths(s.Files); !slices.Equal(got, tc.want) {
			t.Errorf("Path %q: files %v, want %v", tc.path, got, tc.want)
		}
	}
	if _, err := Open(ctx, Options{URL: dir, Path: "../x"}); err == nil {
		t.Error("Open with a path outside the repository: no error")
	}
}

// TestCommitRebasesOnNewHead: a person pushes after the daemon's last
// fetch; the daemon's push is refused, it refetches, reapplies its change
// on the person's commit and pushes on top of it.
func TestCommitRebasesOnNewHead(t *testing.T) {
	needGit(t)
	for name, rem := range perTransport(t, initialFiles) {
		t.Run(name, func(t *testing.T) {
			dir, url := rem.dir, rem.url
			ctx := testContext(t, time.Minute)
			r, err := Open(ctx, Options{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			var raw []string
			r.onRetry = func(_ int, err error) { raw = append(raw, err.Error()) }

			person := clonePerson(t, dir)
			writeFile(t, filepath.Join(person, "status/hal9.yaml"), "phase: canary\nnote: a person wrote this\n")
			run(t, person, "commit", "-q", "-am", "person edits the status")
			run(t, person, "push", "-q", "origin", "main")
			pushed := run(t, person, "rev-parse", "HEAD")

			var seen []string
			h, err := r.Commit(ctx, CommitRequest{
				Message: "status: append", Author: daemon,
				Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
					old, err := read("status/hal9.yaml")
					if err != nil {
						return nil, err
					}
					seen = append(seen, string(old))
					return map[string][]byte{"status/hal9.yaml": append(old, "daemon: was here\n"...)}, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != 1 {
				t.Fatalf("lost %d races (%q), want 1", len(raw), raw)
			}
			t.Logf("raw push error: %s", raw[0])
			if len(seen) != 2 || strings.Contains(seen[0], "person") || !strings.Contains(seen[1], "person") {
				t.Fatalf("Changes saw %q, want the old tree then the person's", seen)
			}
			if got := run(t, dir, "log", "-1", "--format=%H %P", "main"); got != string(h)+" "+pushed {
				t.Errorf("main = %s, want %s on top of %s", got, h, pushed)
			}
			if got := run(t, dir, "show", "main:status/hal9.yaml"); got != "phase: canary\nnote: a person wrote this\ndaemon: was here" {
				t.Errorf("status = %q", got)
			}
			// The person's commit lies under the daemon's: not own.
			s, err := r.Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if s.Commit != h || s.Own {
				t.Errorf("Sync = %s own=%v, want %s not own (a person's commit is below it)", s.Commit, s.Own, h)
			}
		})
	}
}

// TestCommitServerSideRace makes the branch move after the server
// advertised it and before it updates the ref (a pre-receive hook moves
// it), so that the server itself refuses the push: the one race go-git's
// own checks cannot see.
func TestCommitServerSideRace(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	hook := `#!/bin/sh
if [ -f move-before-update ]; then
	target=$(cat move-before-update)
	rm -f move-before-update
	env -u GIT_QUARANTINE_PATH git update-ref refs/heads/main "$target"
fi
exit 0
`
	if err := os.WriteFile(filepath.Join(dir, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	// The commit the hook moves main to: a person's, pushed to a side
	// branch first so that the server has it.
	person := clonePerson(t, dir)
	writeFile(t, filepath.Join(person, "plans/hal9.yaml"), planYAML("hal9", "canary", 35))
	run(t, person, "commit", "-q", "-am", "canary to 35%")
	run(t, person, "push", "-q", "origin", "HEAD:side")
	sneaked := run(t, person, "rev-parse", "HEAD")

	for name, url := range transports(t, base, "r.git") {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			run(t, dir, "update-ref", "refs/heads/main", sneaked+"~1")
			r, err := Open(ctx, Options{URL: url})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "move-before-update"), sneaked)
			var raw []string
			r.onRetry = func(_ int, err error) { raw = append(raw, err.Error()) }
			h, err := r.Commit(ctx, CommitRequest{
				Message: "status", Author: daemon,
				Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
					return map[string][]byte{"status/hal9.yaml": []byte("phase: canary # " + name + "\n")}, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != 1 || !strings.Contains(raw[0], "failed to update ref") {
				t.Fatalf("raw errors %q, want one server refusal", raw)
			}
			t.Logf("raw push error: %s", raw[0])
			if got := run(t, dir, "log", "-1", "--format=%P", string(h)); got != sneaked {
				t.Errorf("daemon commit's parent = %s, want the sneaked-in %s", got, sneaked)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	bare(t, base, "empty.git", nil)
	urls := transports(t, base, "r.git")
	ctx := testContext(t, time.Minute)
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			_, err := Open(ctx, Options{URL: url, Branch: "nope"})
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "branch nope does not exist") {
				t.Errorf("Open of a missing branch: %v, want ErrNotFound naming the branch", err)
			}
			missing := strings.Replace(url, "r.git", "missing.git", 1)
			if _, err := Open(ctx, Options{URL: missing}); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open of a missing repository: %v, want ErrNotFound", err)
			} else {
				t.Logf("missing repository: %v", err)
			}
			empty := strings.Replace(url, "r.git", "empty.git", 1)
			if _, err := Open(ctx, Options{URL: empty}); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open of an empty repository: %v, want ErrNotFound", err)
			} else {
				t.Logf("empty repository: %v", err)
			}
		})
	}

	// The branch disappears after Open: Commit says so.
	run(t, dir, "branch", "gone", "main")
	for name, url := range urls {
		t.Run("deleted/"+name, func(t *testing.T) {
			run(t, dir, "update-ref", "refs/heads/gone", "main")
			r, err := Open(ctx, Options{URL: url, Branch: "gone"})
			if err != nil {
				t.Fatal(err)
			}
			run(t, dir, "update-ref", "-d", "refs/heads/gone")
			_, err = r.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("x")})
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "branch gone does not exist") {
				t.Errorf("Commit to a deleted branch: %v, want ErrNotFound naming the branch", err)
			}
			// Deleted between the fetch and the push.
			run(t, dir, "update-ref", "refs/heads/gone", "main")
			if _, err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			run(t, dir, "update-ref", "-d", "refs/heads/gone")
			_, err = r.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("y")})
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Commit to a branch deleted after the fetch: %v, want ErrNotFound", err)
			}
			t.Logf("branch deleted after the fetch: %v", err)
		})
	}
}

func writeStatus(content string) func(func(string) ([]byte, error)) (map[string][]byte, error) {
	return func(func(string) ([]byte, error)) (map[string][]byte, error) {
		return map[string][]byte{"status/hal9.yaml": []byte(content)}, nil
	}
}

func TestNetworkError(t *testing.T) {
	needGit(t)
	ctx := testContext(t, time.Minute)
	port := freePort(t) // nothing listens there any more
	for _, url := range []string{
		fmt.Sprintf("git://127.0.0.1:%d/r.git", port),
		fmt.Sprintf("http://127.0.0.1:%d/r.git", port),
	} {
		_, err := Open(ctx, Options{URL: url})
		if !errors.Is(err, ErrNetwork) {
			t.Errorf("Open(%s): %v, want ErrNetwork", url, err)
		} else {
			t.Logf("%s: %v", url, err)
		}
	}
}

// TestHTTPSToken serves the repository over https behind basic auth that
// accepts only the token.
func TestHTTPSToken(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	const token = "s3cret-token-value"
	srv := httptest.NewTLSServer(basicAuth(token, httpBackend(t, base)))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	good := filepath.Join(t.TempDir(), "token")
	writeFile(t, good, token+"\n")
	bad := filepath.Join(t.TempDir(), "bad-token")
	writeFile(t, bad, "wrong-token-value\n")
	url := srv.URL + "/r.git"
	ctx := testContext(t, time.Minute)

	r, err := Open(ctx, Options{URL: url, CAFile: ca, Auth: Auth{TokenFile: good}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := r.Commit(ctx, CommitRequest{Message: "status over https", Author: daemon, Changes: writeStatus("phase: full\n")})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, dir, "rev-parse", "main"); got != string(h) {
		t.Errorf("main = %s, want %s", got, h)
	}

	// A rotated token file is read at the next operation.
	writeFile(t, good, "rotated-token-value\n")
	if _, err := r.Head(ctx); !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), "rotated-token-value") {
		t.Errorf("Head after the token rotated away from the server's: %v, want ErrAuth without the token", err)
	}
	writeFile(t, good, token)
	if _, err := r.Head(ctx); err != nil {
		t.Errorf("Head after the token was restored: %v", err)
	}

	for name, o := range map[string]Options{
		"wrong token":      {URL: url, CAFile: ca, Auth: Auth{TokenFile: bad}},
		"no token":         {URL: url, CAFile: ca},
		"token in the URL": {URL: strings.Replace(url, "https://", "https://git:wrong-token-value@", 1), CAFile: ca},
		"untrusted server": {URL: url, Auth: Auth{TokenFile: good}},
	} {
		_, err := Open(ctx, o)
		if !errors.Is(err, ErrAuth) {
			t.Errorf("%s: %v, want ErrAuth", name, err)
			continue
		}
		if strings.Contains(err.Error(), "wrong-token-value") || strings.Contains(err.Error(), token) {
			t.Errorf("%s: the error shows the token: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}

	// The wrong token also fails a push, and the push is not retried.
	r2, err := Open(ctx, Options{URL: url, CAFile: ca, Auth: Auth{TokenFile: good}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, good, "wrong-token-value")
	_, err = r2.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("x\n")})
	if !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), "wrong-token-value") {
		t.Errorf("Commit with a wrong token: %v, want ErrAuth without the token", err)
	}
}

func TestOpenRejectsMisplacedCredentials(t *testing.T) {
	ctx := testContext(t, time.Minute)
	token := filepath.Join(t.TempDir(), "token")
	writeFile(t, token, "secret")
	for name, o := range map[string]Options{
		"token over plain http": {URL: "http://git.example.com/r.git", Auth: Auth{TokenFile: token}},
		"token for ssh":         {URL: "git@github.com:org/plans.git", Auth: Auth{TokenFile: token}},
		"ssh without a key":     {URL: "ssh://git@github.com/org/plans.git"},
		"ssh key for https":     {URL: "https://github.com/org/plans.git", Auth: Auth{SSHKeyFile: token}},
		"token for git://":      {URL: "git://127.0.0.1/r.git", Auth: Auth{TokenFile: token}},
		"token for a path":      {URL: "/srv/git/r.git", Auth: Auth{TokenFile: token}},
		"missing token file":    {URL: "https://github.com/org/plans.git", Auth: Auth{TokenFile: token + ".missing"}},
		"unknown scheme":        {URL: "ftp://example.com/r.git"},
		"bad branch":            {URL: "/srv/git/r.git", Branch: "a..b"},
	} {
		if _, err := Open(ctx, o); err == nil {
			t.Errorf("%s: Open succeeded", name)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error shows the token: %v", name, err)
		}
	}
}

func TestAuthString(t *testing.T) {
	a := Auth{SSHKeyFile: "/k", SSHKeyPassphrase: "hunter2", KnownHostsFile: "/kh", TokenFile: "/t"}
	o := Options{URL: "https://x", Auth: a}
	for _, s := range []string{a.String(), fmt.Sprint(a), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("%q shows the passphrase", s)
		}
	}
}

func TestCommitRequestValidation(t *testing.T) {
	needGit(t)
	dir := bare(t, t.TempDir(), "r.git", initialFiles)
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: dir})
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]CommitRequest{
		"no message":    {Author: daemon, Changes: writeStatus("x")},
		"no author":     {Message: "m", Changes: writeStatus("x")},
		"no changes":    {Message: "m", Author: daemon},
		"bad trailer":   {Message: "m", Author: daemon, Trailers: map[string]string{"Bad Key": "v"}, Changes: writeStatus("x")},
		"multiline":     {Message: "m", Author: daemon, Trailers: map[string]string{"K": "a\nb"}, Changes: writeStatus("x")},
		"escaping path": {Message: "m", Author: daemon, Changes: changes(map[string][]byte{"../x": []byte("x")})},
		"into .git":     {Message: "m", Author: daemon, Changes: changes(map[string][]byte{".git/config": []byte("x")})},
		"file as dir":   {Message: "m", Author: daemon, Changes: changes(map[string][]byte{"README.md/x": []byte("x")})},
		"dir as file":   {Message: "m", Author: daemon, Changes: changes(map[string][]byte{"plans": []byte("x")})},
		"changes fail": {Message: "m", Author: daemon, Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
			_, err := read("status/missing.yaml")
			return nil, err
		}},
	} {
		if _, err := r.Commit(ctx, req); err == nil {
			t.Errorf("%s: Commit succeeded", name)
		} else if name == "changes fail" && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want fs.ErrNotExist", name, err)
		}
	}
	if n := run(t, dir, "rev-list", "--count", "main"); n != "1" {
		t.Errorf("%s commits after refused requests, want 1", n)
	}
}

func changes(m map[string][]byte) func(func(string) ([]byte, error)) (map[string][]byte, error) {
	return func(func(string) ([]byte, error)) (map[string][]byte, error) { return m, nil }
}

// TestCommitTree checks the trees Commit writes against git's own reading
// of them: deletions, new directories, executable bits kept, fsck clean.
func TestCommitTree(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	work := clonePerson(t, dir)
	writeFile(t, filepath.Join(work, "bin/run.sh"), "#!/bin/sh\n")
	run(t, work, "update-index", "--add", "--chmod=+x", "bin/run.sh")
	run(t, work, "commit", "-q", "-m", "script")
	run(t, work, "push", "-q", "origin", "main")
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Commit(ctx, CommitRequest{Message: "many", Author: daemon, Changes: changes(map[string][]byte{
		"plans/small/other.json": nil,           // the directory empties and goes
		"status/new/deep/a.yaml": []byte("a\n"), // new directories
		"status/hal9.yaml":       []byte(""),    // an empty file, not a deletion
		"bin/run.sh":             []byte("#!/bin/sh\nexit 0\n"),
		"absent.txt":             nil, // deleting what is not there
		"Plans-z":                []byte("z\n"),
		"plans.txt":              []byte("sorted before plans/ in git's order\n"),
	})})
	if err != nil {
		t.Fatal(err)
	}
	run(t, dir, "fsck", "--strict", "--no-dangling")
	files := run(t, dir, "ls-tree", "-r", "--format=%(objectmode) %(path)", "main")
	want := strings.Join([]string{
		"100644 Plans-z",
		"100644 README.md",
		"100755 bin/run.sh",
		"100644 examples/plan/dev.yaml",
		"100644 plans.txt",
		"100644 plans/.drafts/wip.yaml",
		"100644 plans/hal9.yaml",
		"100644 plans/notes.txt",
		"100644 status/hal9.yaml",
		"100644 status/new/deep/a.yaml",
	}, "\n")
	if files != want {
		t.Errorf("tree:\n%s\nwant:\n%s", files, want)
	}
}

// TestCommitConcurrentCallers: Commit serialises callers of one Repo.
func TestCommitConcurrentCallers(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	url := gitDaemon(t, base) + "r.git"
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Go(func() {
			_, err := r.Commit(ctx, CommitRequest{Message: fmt.Sprint("status ", i), Author: daemon,
				Changes: changes(map[string][]byte{fmt.Sprintf("status/p%d.yaml", i): []byte("x\n")})})
			errs <- err
		})
		wg.Go(func() {
			if _, err := r.Sync(ctx); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := run(t, dir, "rev-list", "--count", "main"); n != "11" {
		t.Errorf("%s commits, want 11", n)
	}
}
