package gitops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// TestClassify holds the error strings classify was written against.
// "captured" strings were produced by this package's tests against real
// servers (git daemon, git http-backend, file://, the SSH server in
// ssh_test.go) or by the git CLI 2.39; "source" strings are literal in
// go-git v5.19.3, x/crypto v0.58.0 or git, for cases the tests cannot
// provoke (go-git's own non-fast-forward check comes after
// RequireRemoteRefs, which fires first).
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		origin string
		err    error
		want   error
	}{
		// The branch moved: retry on the new head.
		{"captured: go-git RequireRemoteRefs, every transport", errors.New("remote ref refs/heads/main required to be 3122c3d0fd87460662819f75906a4ee1ebeef8f5 but is 35237188fa406c841a5a78cd6d725bd26b089ded"), ErrNonFastForward},
		{"captured: git receive-pack's report over git://, http://, file://, ssh", errors.New("command error on refs/heads/main: failed to update ref"), ErrNonFastForward},
		{"captured: git receive-pack stderr", errors.New("error: cannot lock ref 'refs/heads/main': is at 11ef1087de1361370c7f222b4b6ebb36ee801d65 but expected f6ae4f22ba90d4261ede8cacea9aedca65b56b7e"), ErrNonFastForward},
		{"captured: git CLI push, remote moved", errors.New(" ! [rejected]        main -> main (fetch first)\nerror: failed to push some refs to '/tmp/cap/r.git'"), ErrNonFastForward},
		{"captured: git CLI push, server-side race", errors.New(" ! [remote rejected] HEAD -> main (failed to update ref)"), ErrNonFastForward},
		{"captured: git CLI --force-with-lease", errors.New(" ! [rejected]        main -> main (stale info)"), ErrNonFastForward},
		{"captured: git CLI, receive.denyNonFastForwards", errors.New(" ! [remote rejected] main -> main (non-fast-forward)"), ErrNonFastForward},
		{"source: go-git checkFastForwardUpdate", errors.New("non-fast-forward update: refs/heads/main"), ErrNonFastForward},
		{"source: go-git report status, denyNonFastForwards", errors.New("command error on refs/heads/main: non-fast-forward"), ErrNonFastForward},
		{"source: older git receive-pack", errors.New("command error on refs/heads/main: failed to lock"), ErrNonFastForward},
		{"source: go-git ErrForceNeeded", fmt.Errorf("fetch: %w", git.ErrForceNeeded), ErrNonFastForward},

		// Missing repository or branch.
		{"captured: git daemon, file://, missing repository", transport.ErrRepositoryNotFound, ErrNotFound},
		{"captured: http-backend, missing repository", fmt.Errorf("%w: ", transport.ErrRepositoryNotFound), ErrNotFound},
		{"captured: empty repository, every transport", transport.ErrEmptyRemoteRepository, ErrNotFound},
		{"captured: go-git RequireRemoteRefs, branch deleted", errors.New("remote ref refs/heads/gone required to be ce5e6f469e43bac9f6cb921715ade1475d5dc9ff but is absent"), ErrNotFound},
		{"source: go-git, as text", errors.New(`couldn't find remote ref "refs/heads/nope"`), ErrNotFound},
		{"source: git, local path", errors.New("fatal: '/srv/x.git' does not appear to be a git repository"), ErrNotFound},
		{"source: git daemon", errors.New("unknown error: no such repository: /x.git"), ErrNotFound},
		{"source: git daemon, as go-git's text", errors.New("unknown error: access denied or repository not exported: /x.git"), ErrNotFound},
		{"source: GitLab", errors.New("unknown error: remote: The project you were looking for could not be found or you don't have permission to view it."), ErrNotFound},

		// Credentials, both ways.
		{"captured: https, wrong or no token (HTTP 401)", fmt.Errorf("%w: unauthorized\n", transport.ErrAuthenticationRequired), ErrAuth},
		{"source: HTTP 403", fmt.Errorf("%w: forbidden", transport.ErrAuthorizationFailed), ErrAuth},
		{"captured: https, untrusted certificate", errors.New(`Get "https://127.0.0.1:36339/r.git/info/refs?service=git-upload-pack": tls: failed to verify certificate: x509: certificate signed by unknown authority`), ErrAuth},
		{"captured: ssh, changed host key", errors.New("ssh: handshake failed: knownhosts: key mismatch"), ErrAuth},
		{"captured: ssh, unknown host", errors.New("ssh: handshake failed: knownhosts: key is unknown"), ErrAuth},
		{"captured: ssh, key refused", errors.New("ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey], no supported methods remain"), ErrAuth},
		{"source: x/crypto ssh, fixed host key", errors.New("ssh: handshake failed: ssh: host key mismatch"), ErrAuth},
		{"source: ssh server banner", errors.New("unknown error: git@github.com: Permission denied (publickey)."), ErrAuth},

		// The network.
		{"captured: git://, nothing listening", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, ErrNetwork},
		{"captured: http://, nothing listening, as text", errors.New(`Get "http://127.0.0.1:41685/r.git/info/refs?service=git-upload-pack": dial tcp 127.0.0.1:41685: connect: connection refused`), ErrNetwork},
		{"source: DNS", errors.New("dial tcp: lookup git.example.invalid: no such host"), ErrNetwork},
		{"source: a dropped connection", io.ErrUnexpectedEOF, ErrNetwork},
		{"source: a dropped connection, as text", errors.New("read tcp 127.0.0.1:5000->127.0.0.1:9418: read: connection reset by peer"), ErrNetwork},
		{"source: go-git waiting for the server", errors.New("timeout exceeded"), ErrNetwork},
		{"source: a deadline inside the transport", os.ErrDeadlineExceeded, ErrNetwork},

		// Neither retryable nor nameable.
		{"captured: a pre-receive hook refused the push", errors.New("command error on refs/heads/main: pre-receive hook declined"), nil},
		{"source: the server could not unpack", errors.New("unpack error: unpack-objects abnormal exit"), nil},
		{"source: go-git, a corrupt object", errors.New("object not found"), nil},
	} {
		got := classify(tc.err)
		var ke *kindError
		if !errors.As(got, &ke) {
			t.Errorf("%s: classify(%q) = %T, want a *kindError", tc.origin, tc.err, got)
			continue
		}
		if ke.kind != tc.want {
			t.Errorf("%s: classify(%q) = %v, want %v", tc.origin, tc.err, ke.kind, tc.want)
		}
		if !strings.Contains(got.Error(), tc.err.Error()) {
			t.Errorf("%s: classify lost the message: %q", tc.origin, got)
		}
		if tc.want != nil && !errors.Is(got, tc.want) {
			t.Errorf("%s: errors.Is(%v, %v) = false", tc.origin, got, tc.want)
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
	once := classify(errors.New("fetch first"))
	if twice := classify(fmt.Errorf("push: %w", once)); !errors.Is(twice, ErrNonFastForward) || strings.Count(twice.Error(), "non-fast-forward") != 1 {
		t.Errorf("classifying twice: %v", twice)
	}
}

// TestCommitHookDeclined: a push refused by a server hook is reported, not
// retried.
func TestCommitHookDeclined(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	hook := "#!/bin/sh\necho 'status commits are frozen' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, time.Minute)
	for name, url := range transports(t, base, "r.git") {
		r, err := Open(ctx, Options{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		retries := 0
		r.onRetry = func(int, error) { retries++ }
		_, err = r.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("x\n")})
		if err == nil || !strings.Contains(err.Error(), "pre-receive hook declined") || retries != 0 {
			t.Errorf("%s: %v after %d retries, want the hook's refusal at once", name, err, retries)
		}
		for _, sentinel := range []error{ErrNonFastForward, ErrAuth, ErrNotFound, ErrNetwork} {
			if errors.Is(err, sentinel) {
				t.Errorf("%s: %v is classified as %v", name, err, sentinel)
			}
		}
		t.Logf("%s: %v", name, err)
	}
}

// TestCommitGivesUp: when every push loses the race, Commit stops after
// its tries with ErrNonFastForward; a cancelled ctx stops the backoff.
func TestCommitGivesUp(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	url := gitDaemon(t, base) + "r.git"
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	person := clonePerson(t, dir)
	// Someone pushes inside every Changes call, after the fetch Commit
	// built on: every push loses.
	pushes := 0
	moveBranch := func(read func(string) ([]byte, error)) (map[string][]byte, error) {
		pushes++
		writeFile(t, filepath.Join(person, "people/x.txt"), fmt.Sprint(pushes))
		run(t, person, "add", "-A")
		run(t, person, "commit", "-q", "-m", fmt.Sprint("person ", pushes))
		run(t, person, "push", "-q", "origin", "HEAD:main")
		return map[string][]byte{"status/hal9.yaml": []byte("lost\n")}, nil
	}
	start := time.Now()
	_, err = r.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: moveBranch})
	if !errors.Is(err, ErrNonFastForward) || !strings.Contains(err.Error(), "gave up after 6 tries") {
		t.Errorf("Commit against a branch that always moves: %v, want ErrNonFastForward after 6 tries", err)
	}
	if pushes != 6 {
		t.Errorf("Changes called %d times, want 6", pushes)
	}
	t.Logf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)

	cctx, cancel := context.WithCancel(ctx)
	r.onRetry = func(attempt int, _ error) {
		if attempt == 2 {
			cancel()
		}
	}
	_, err = r.Commit(cctx, CommitRequest{Message: "status", Author: daemon, Changes: moveBranch})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestTrailers(t *testing.T) {
	msg, err := commitMessage("  rollback hal9: error-rate 0.09 > 0.05\n\nfrom canary 25% to canary 10%\n", map[string]string{
		"Hal9-Migrate-Plan":   "hal9",
		"Hal9-Migrate-Action": "rollback",
		"hal9-migrate-bot":    "false", // overridden: Commit always marks its commits
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "rollback hal9: error-rate 0.09 > 0.05\n\nfrom canary 25% to canary 10%\n\n" +
		"Hal9-Migrate-Action: rollback\nHal9-Migrate-Bot: true\nHal9-Migrate-Plan: hal9\n"
	if msg != want {
		t.Errorf("message:\n%s\nwant:\n%s", msg, want)
	}
	got := Trailers(msg)
	if got["Hal9-Migrate-Plan"] != "hal9" || got["Hal9-Migrate-Action"] != "rollback" || !isBot(msg) {
		t.Errorf("Trailers = %v", got)
	}
	for _, tc := range []struct {
		msg string
		bot bool
	}{
		{"status\n\nHal9-Migrate-Bot: true\n", true},
		{"status\n\nSigned-off-by: A <a@example.com>\nhal9-migrate-bot: TRUE", true},
		{"Hal9-Migrate-Bot: true", false},                            // the subject is no trailer block
		{"status\n\nHal9-Migrate-Bot: true\n\nmore text\n", false},   // not the last paragraph
		{"status\n\nHal9-Migrate-Bot: true\nnot a trailer\n", false}, // not all trailer lines
		{"status\n\nHal9-Migrate-Bot: false\n", false},
		{"revert \"status\"\n\nThis reverts commit abc.\n", false},
	} {
		if got := isBot(tc.msg); got != tc.bot {
			t.Errorf("isBot(%q) = %v, want %v", tc.msg, got, tc.bot)
		}
	}
}

// TestOwnChains covers Snapshot.Own across a chain of
// the daemon's commits, and a chain from another process.
func TestOwnChains(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", initialFiles)
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Three daemon commits in a row between two Syncs: own.
	for i := range 3 {
		if _, err := r.Commit(ctx, CommitRequest{Message: "s", Author: daemon, Changes: writeStatus(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := r.Sync(ctx); err != nil || !s.Own || !s.Changed {
		t.Fatalf("after 3 own commits: own=%v changed=%v err=%v, want own", s.Own, s.Changed, err)
	}
	// Another daemon process (another Repo) commits once on top of what
	// this one saw: its parent is our snapshot, so still own.
	other, err := Open(ctx, Options{URL: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Commit(ctx, CommitRequest{Message: "s", Author: daemon, Changes: writeStatus("other 1")}); err != nil {
		t.Fatal(err)
	}
	if s, err := r.Sync(ctx); err != nil || !s.Own {
		t.Fatalf("after another process's commit: own=%v err=%v, want own", s.Own, err)
	}
	// Two commits from the other process: the one below the head cannot
	// be read from a depth-1 clone, so it is not taken as own.
	for i := range 2 {
		if _, err := other.Commit(ctx, CommitRequest{Message: "s", Author: daemon, Changes: writeStatus(fmt.Sprint("other 2 ", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := r.Sync(ctx); err != nil || s.Own {
		t.Fatalf("after two commits of another process: own=%v err=%v, want not own", s.Own, err)
	}
	// A person's commit and then a daemon commit: not own.
	person := clonePerson(t, dir)
	writeFile(t, filepath.Join(person, "plans/hal9.yaml"), planYAML("hal9", "full", 100))
	run(t, person, "commit", "-q", "-am", "go full")
	run(t, person, "push", "-q", "origin", "main")
	if _, err := other.Commit(ctx, CommitRequest{Message: "s", Author: daemon, Changes: writeStatus("after person")}); err != nil {
		t.Fatal(err)
	}
	if s, err := r.Sync(ctx); err != nil || s.Own || !strings.Contains(string(s.Files[0].Data), "full") {
		t.Fatalf("after a person's commit under a daemon's: own=%v err=%v, want not own with the person's plan", s.Own, err)
	}
	// A person's commit and then this Repo's own, rebased onto it before
	// a Sync: not own, and the change is the person's commit, not the
	// daemon's on top.
	run(t, person, "pull", "-q", "--rebase", "origin", "main")
	writeFile(t, filepath.Join(person, "plans/hal9.yaml"), planYAML("hal9", "canary", 10))
	run(t, person, "commit", "-q", "-am", "back to canary 10%")
	run(t, person, "push", "-q", "origin", "main")
	want := strings.TrimSpace(run(t, person, "rev-parse", "HEAD"))
	mine, err := r.Commit(ctx, CommitRequest{Message: "s", Author: daemon, Changes: writeStatus("on the person's")})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r.Sync(ctx); err != nil || s.Own || s.Commit != mine || string(s.Person) != want {
		t.Fatalf("after this Repo's commit on a person's: own=%v commit=%s person=%s err=%v, want not own, person %s", s.Own, s.Commit, s.Person, err, want)
	}
}
