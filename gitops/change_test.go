package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var person = Signature{Name: "Ada", Email: "ada@example.com"}

// touch is an edit that appends a line naming what it saw: run again on a
// file that changed meanwhile, it describes another change.
func touch(line string) func([]byte) (Edited, error) { return touchWith(line, nil) }

// touchWith is touch, with trailers.
func touchWith(line string, trailers map[string]string) func([]byte) (Edited, error) {
	return func(data []byte) (Edited, error) {
		change := fmt.Sprintf("append %q to %d bytes", line, len(data))
		return Edited{Data: append(bytes.Clone(data), line+"\n"...), Change: change, Message: "test: " + change, Trailers: trailers}, nil
	}
}

// same is an edit that changes nothing.
func same(data []byte) (Edited, error) {
	return Edited{Data: data, Change: "nothing", Message: "nothing"}, nil
}

// localClone makes a working tree with a first commit on main holding
// files, and returns its path.
func newLocal(t *testing.T, files map[string]string) string {
	t.Helper()
	needGit(t)
	dir := t.TempDir()
	run(t, dir, "init", "-q", "-b", "main")
	for p, content := range files {
		writeFile(t, filepath.Join(dir, p), content)
	}
	run(t, dir, "add", "-A")
	run(t, dir, "commit", "-q", "-m", "initial plans")
	return dir
}

var shopFiles = map[string]string{
	"plans/shop.yaml": planYAML("shop", "canary", 10),
	"README.md":       "plans\n",
}

func openBranch(t *testing.T, o BranchOptions) *Branch {
	t.Helper()
	b, err := OpenBranch(testContext(t, time.Minute), o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestChangeLocal(t *testing.T) {
	dir := newLocal(t, shopFiles)
	before := run(t, dir, "rev-parse", "HEAD")
	// Someone's unrelated work, staged and not: the commit must not take
	// it, and must leave it where it is.
	writeFile(t, filepath.Join(dir, "README.md"), "plans, staged\n")
	run(t, dir, "add", "README.md")
	writeFile(t, filepath.Join(dir, "notes.txt"), "untracked\n")

	b := openBranch(t, BranchOptions{Repo: filepath.Join(dir, "plans")})
	if !b.Local() || !b.Exists() || b.Name() != "main" {
		t.Fatalf("branch %s local=%v exists=%v", b.Name(), b.Local(), b.Exists())
	}
	if got := paths(b.Files()); len(got) != 1 || got[0] != "plans/shop.yaml" {
		t.Fatalf("files = %v", got)
	}
	var confirmed string
	res, err := b.Change(testContext(t, time.Minute), ChangeRequest{
		File:    "plans/shop.yaml",
		Edit:    touchWith("# moved", map[string]string{"Hal9-Migrate-Plan": "shop"}),
		Confirm: func(e Edited) error { confirmed = e.Change; return nil },
		Author:  person,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit == "" || res.Created || res.Pushed || res.Branch != "main" || res.Change != confirmed || confirmed == "" {
		t.Fatalf("result = %+v (confirmed %q)", res, confirmed)
	}
	if got := run(t, dir, "log", "-1", "--format=%H %P|%an <%ae>|%B"); got != string(res.Commit)+" "+before+"|Ada <ada@example.com>|test: "+res.Change+"\n\nHal9-Migrate-Plan: shop" {
		t.Errorf("commit = %q", got)
	}
	if got := run(t, dir, "show", "--format=", "--name-only", "HEAD"); got != "plans/shop.yaml" {
		t.Errorf("the commit changed %q, want only the plan", got)
	}
	if got := run(t, dir, "status", "--porcelain"); got != "M  README.md\n?? notes.txt" {
		t.Errorf("status:\n%s\nwant the staged README and the untracked notes only", got)
	}
	data, err := os.ReadFile(filepath.Join(dir, "plans/shop.yaml"))
	if err != nil || !strings.HasSuffix(string(data), "percentage: 10\n# moved\n") {
		t.Errorf("working tree file = %q, %v", data, err)
	}

	// A second change builds on the first.
	res2, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# again"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, dir, "rev-parse", "HEAD~1"); got != string(res.Commit) {
		t.Errorf("second commit's parent = %s, want %s", got, res.Commit)
	}
	if got := run(t, dir, "rev-parse", "HEAD"); got != string(res2.Commit) {
		t.Errorf("HEAD = %s, want %s", got, res2.Commit)
	}
}

func TestChangeLocalRefuses(t *testing.T) {
	dir := newLocal(t, shopFiles)
	head := run(t, dir, "rev-parse", "HEAD")
	change := func(t *testing.T, o BranchOptions) (ChangeResult, error) {
		t.Helper()
		o.Repo = dir
		b := openBranch(t, o)
		return b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# x"), Author: person})
	}

	t.Run("unstaged changes", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "plans/shop.yaml"), planYAML("shop", "canary", 5))
		t.Cleanup(func() { run(t, dir, "checkout", "-q", "--", "plans/shop.yaml") })
		_, err := change(t, BranchOptions{})
		if err == nil || !strings.Contains(err.Error(), "plans/shop.yaml has uncommitted changes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("staged changes", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "plans/shop.yaml"), planYAML("shop", "canary", 5))
		run(t, dir, "add", "plans/shop.yaml")
		writeFile(t, filepath.Join(dir, "plans/shop.yaml"), planYAML("shop", "canary", 10))
		t.Cleanup(func() { run(t, dir, "reset", "-q", "--hard") })
		_, err := change(t, BranchOptions{})
		if err == nil || !strings.Contains(err.Error(), "uncommitted changes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, "plans/shop.yaml")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { run(t, dir, "checkout", "-q", "--", "plans/shop.yaml") })
		_, err := change(t, BranchOptions{})
		if err == nil || !strings.Contains(err.Error(), "uncommitted changes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no such file", func(t *testing.T) {
		b := openBranch(t, BranchOptions{Repo: dir})
		_, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/nope.yaml", Edit: touch("# x"), Author: person})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("from", func(t *testing.T) {
		_, err := OpenBranch(testContext(t, time.Minute), BranchOptions{Repo: dir, Branch: "pr", From: "main"})
		if err == nil || !strings.Contains(err.Error(), "starts new branches at HEAD") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("detached", func(t *testing.T) {
		run(t, dir, "checkout", "-q", "--detach")
		t.Cleanup(func() { run(t, dir, "checkout", "-q", "main") })
		_, err := OpenBranch(testContext(t, time.Minute), BranchOptions{Repo: dir})
		if err == nil || !strings.Contains(err.Error(), "detached") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no author", func(t *testing.T) {
		b := openBranch(t, BranchOptions{Repo: dir})
		_, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# x"), Author: Signature{Name: "x"}})
		if err == nil || !strings.Contains(err.Error(), "author") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("confirm declined", func(t *testing.T) {
		b := openBranch(t, BranchOptions{Repo: dir})
		no := errors.New("declined")
		_, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# x"), Author: person,
			Confirm: func(Edited) error { return no }})
		if err != no {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("edited while asked", func(t *testing.T) {
		b := openBranch(t, BranchOptions{Repo: dir})
		t.Cleanup(func() { run(t, dir, "checkout", "-q", "--", "plans/shop.yaml") })
		_, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# x"), Author: person,
			Confirm: func(Edited) error {
				writeFile(t, filepath.Join(dir, "plans/shop.yaml"), "edited meanwhile\n")
				return nil
			}})
		if err == nil || !strings.Contains(err.Error(), "uncommitted changes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unchanged", func(t *testing.T) {
		b := openBranch(t, BranchOptions{Repo: dir, Branch: "never"})
		res, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: same, Author: person})
		if err != nil || res.Commit != "" || res.Created {
			t.Fatalf("Change = %+v, %v; want no commit", res, err)
		}
		if got := run(t, dir, "branch", "--list", "never"); got != "" {
			t.Errorf("an unchanged file created branch %q", got)
		}
	})
	if got := run(t, dir, "rev-parse", "HEAD"); got != head {
		t.Errorf("HEAD moved to %s", got)
	}
	if got := run(t, dir, "status", "--porcelain"); got != "" {
		t.Errorf("status:\n%s", got)
	}
}

func TestChangeLocalBranches(t *testing.T) {
	dir := newLocal(t, shopFiles)
	main := run(t, dir, "rev-parse", "HEAD")

	// A new branch starts at HEAD and is checked out, like git switch -c.
	b := openBranch(t, BranchOptions{Repo: dir, Branch: "pr"})
	if b.Exists() || b.From() != "main" {
		t.Fatalf("exists=%v from=%q", b.Exists(), b.From())
	}
	res, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# pr"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.From != "main" || res.Branch != "pr" {
		t.Fatalf("result = %+v", res)
	}
	if got := run(t, dir, "rev-parse", "--abbrev-ref", "HEAD"); got != "pr" {
		t.Errorf("checked out %s, want pr", got)
	}
	if got := run(t, dir, "rev-parse", "main"); got != main {
		t.Errorf("main moved")
	}
	if got := run(t, dir, "status", "--porcelain"); got != "" {
		t.Errorf("status:\n%s", got)
	}

	// An existing branch that is not checked out is committed on without
	// touching the working tree, even where it differs.
	writeFile(t, filepath.Join(dir, "plans/shop.yaml"), "work in progress\n")
	b = openBranch(t, BranchOptions{Repo: dir, Branch: "main"})
	res, err = b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# main"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, dir, "log", "-1", "--format=%H %P", "main"); got != string(res.Commit)+" "+main {
		t.Errorf("main = %s", got)
	}
	if got := run(t, dir, "show", "main:plans/shop.yaml"); !strings.HasSuffix(got, "percentage: 10\n# main") {
		t.Errorf("main's plan = %q", got)
	}
	if got := run(t, dir, "status", "--porcelain"); got != "M plans/shop.yaml" {
		t.Errorf("status:\n%s\nwant the work in progress left alone", got)
	}
	if got := run(t, dir, "rev-parse", "--abbrev-ref", "HEAD"); got != "pr" {
		t.Errorf("checked out %s, want pr", got)
	}
}

func TestChangeLocalPush(t *testing.T) {
	base := t.TempDir()
	origin := bare(t, base, "origin.git", shopFiles)
	dir := clonePerson(t, origin)

	b := openBranch(t, BranchOptions{Repo: dir, Push: true})
	res, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# pushed"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pushed {
		t.Fatalf("result = %+v", res)
	}
	if got := run(t, origin, "rev-parse", "main"); got != string(res.Commit) {
		t.Errorf("origin main = %s, want %s", got, res.Commit)
	}
	if got := run(t, dir, "rev-parse", "origin/main"); got != string(res.Commit) {
		t.Errorf("origin/main = %s, want %s", got, res.Commit)
	}

	// A new branch is pushed as a new branch.
	b = openBranch(t, BranchOptions{Repo: dir, Branch: "pr", Push: true})
	res, err = b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# pr"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, origin, "rev-parse", "pr"); got != string(res.Commit) {
		t.Errorf("origin pr = %s, want %s", got, res.Commit)
	}

	// Someone else pushed first: the push is refused, never forced, and
	// the commit stays in the clone.
	other := clonePerson(t, origin)
	writeFile(t, filepath.Join(other, "README.md"), "someone else\n")
	run(t, other, "commit", "-q", "-am", "someone else")
	run(t, other, "push", "-q", "origin", "main")
	theirs := run(t, other, "rev-parse", "HEAD")
	run(t, dir, "checkout", "-q", "main")
	b = openBranch(t, BranchOptions{Repo: dir, Push: true})
	res, err = b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# late"), Author: person})
	if !errors.Is(err, ErrNonFastForward) || !strings.Contains(err.Error(), "pull, then push") {
		t.Fatalf("err = %v, want a non-fast-forward", err)
	}
	if res.Commit == "" || res.Pushed {
		t.Errorf("result = %+v, want the commit made and not pushed", res)
	}
	if got := run(t, dir, "rev-parse", "main"); got != string(res.Commit) {
		t.Errorf("local main = %s, want %s", got, res.Commit)
	}
	if got := run(t, origin, "rev-parse", "main"); got != theirs {
		t.Errorf("origin main = %s, want theirs %s", got, theirs)
	}
}

func TestChangeRemote(t *testing.T) {
	base := t.TempDir()
	origin := bare(t, base, "origin.git", shopFiles)
	ctx := testContext(t, time.Minute)

	// The daemon follows main; the person's commit must read as not its
	// own, so that it acts on it.
	daemonRepo, err := Open(ctx, Options{URL: origin})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := daemonRepo.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	b := openBranch(t, BranchOptions{Repo: origin})
	if b.Local() || !b.Exists() || b.Name() != "main" {
		t.Fatalf("branch %s local=%v exists=%v", b.Name(), b.Local(), b.Exists())
	}
	res, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touchWith("# remote", map[string]string{"Hal9-Migrate-Action": "migrate"}), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pushed || res.Created || res.Commit == "" {
		t.Fatalf("result = %+v", res)
	}
	if got := run(t, origin, "log", "-1", "--format=%H|%an|%B", "main"); got != string(res.Commit)+"|Ada|test: "+res.Change+"\n\nHal9-Migrate-Action: migrate" {
		t.Errorf("commit = %q", got)
	}
	s, err := daemonRepo.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Commit != res.Commit || s.Own {
		t.Errorf("daemon sees %s own=%v, want %s not own", s.Commit, s.Own, res.Commit)
	}

	// Unchanged: nothing committed.
	head := run(t, origin, "rev-parse", "main")
	res, err = b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: same, Author: person})
	if err != nil || res.Commit != "" {
		t.Fatalf("Change = %+v, %v; want no commit", res, err)
	}
	if got := run(t, origin, "rev-parse", "main"); got != head {
		t.Errorf("main moved")
	}
}

func TestChangeRemoteNewBranch(t *testing.T) {
	base := t.TempDir()
	origin := bare(t, base, "origin.git", shopFiles)
	main := run(t, origin, "rev-parse", "main")
	ctx := testContext(t, time.Minute)

	b := openBranch(t, BranchOptions{Repo: origin, Branch: "new-pr"})
	if b.Exists() || b.From() != "main" || len(b.Files()) != 1 {
		t.Fatalf("exists=%v from=%q files=%v", b.Exists(), b.From(), paths(b.Files()))
	}
	res, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touch("# pr"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || res.From != "main" || !res.Pushed {
		t.Fatalf("result = %+v", res)
	}
	if got := run(t, origin, "log", "-1", "--format=%H %P", "new-pr"); got != string(res.Commit)+" "+main {
		t.Errorf("new-pr = %s", got)
	}
	if got := run(t, origin, "rev-parse", "main"); got != main {
		t.Errorf("main moved")
	}
	// Now it exists: the next change goes on top.
	res2, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touch("# pr 2"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Created {
		t.Errorf("created twice")
	}
	if got := run(t, origin, "log", "-1", "--format=%P", "new-pr"); got != string(res.Commit) {
		t.Errorf("second commit's parent = %s", got)
	}

	// Another base, and a base that does not exist.
	run(t, origin, "branch", "release", "main")
	b = openBranch(t, BranchOptions{Repo: origin, Branch: "hotfix", From: "release"})
	if b.Exists() || b.From() != "release" {
		t.Fatalf("exists=%v from=%q", b.Exists(), b.From())
	}
	_, err = OpenBranch(ctx, BranchOptions{Repo: origin, Branch: "x", From: "nope"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want not found", err)
	}
}

// TestChangeRemoteRace pushes a person's commit between the edit and the
// push: a commit to another file is built upon; a commit to the same file
// that makes the edit describe another change refuses it.
func TestChangeRemoteRace(t *testing.T) {
	for _, tt := range []struct {
		name, file string
		wantErr    string
	}{
		{"other file", "README.md", ""},
		{"same file", "plans/shop.yaml", "changed on branch main meanwhile"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			origin := bare(t, base, "origin.git", shopFiles)
			ctx := testContext(t, time.Minute)
			b := openBranch(t, BranchOptions{Repo: origin})
			var theirs string
			res, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touch("# mine"), Author: person,
				Confirm: func(Edited) error {
					other := clonePerson(t, origin)
					f := filepath.Join(other, tt.file)
					data, err := os.ReadFile(f)
					if err != nil {
						return err
					}
					writeFile(t, f, string(data)+"# theirs\n")
					run(t, other, "commit", "-q", "-am", "theirs")
					run(t, other, "push", "-q", "origin", "main")
					theirs = run(t, other, "rev-parse", "HEAD")
					return nil
				}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if got := run(t, origin, "rev-parse", "main"); got != theirs {
					t.Errorf("main = %s, want theirs", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, origin, "log", "-1", "--format=%H %P", "main"); got != string(res.Commit)+" "+theirs {
				t.Errorf("main = %s, want %s on theirs %s", got, res.Commit, theirs)
			}
		})
	}
}

// TestChangeLocalWorktree commits from a linked worktree (git worktree
// add), whose branches and objects live in the main repository, and
// refuses a branch checked out in another worktree: moving it would leave
// that worktree's index holding the old file, a change staged to undo the
// commit.
func TestChangeLocalWorktree(t *testing.T) {
	dir := newLocal(t, shopFiles)
	linked := filepath.Join(t.TempDir(), "linked")
	run(t, dir, "worktree", "add", "-q", "-b", "feat", linked)
	main := run(t, dir, "rev-parse", "main")
	ctx := testContext(t, time.Minute)

	b := openBranch(t, BranchOptions{Repo: linked})
	if b.Name() != "feat" {
		t.Fatalf("branch = %s, want feat", b.Name())
	}
	res, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touch("# feat"), Author: person})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, dir, "rev-parse", "feat"); got != string(res.Commit) {
		t.Errorf("feat = %s, want %s", got, res.Commit)
	}
	for _, wt := range []string{dir, linked} {
		if got := run(t, wt, "status", "--porcelain"); got != "" {
			t.Errorf("status of %s:\n%s", filepath.Base(wt), got)
		}
	}

	for _, tt := range []struct{ from, branch, at string }{
		{linked, "main", dir},
		{dir, "feat", linked},
	} {
		b := openBranch(t, BranchOptions{Repo: tt.from, Branch: tt.branch})
		before := run(t, dir, "rev-parse", tt.branch)
		_, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touch("# " + tt.branch), Author: person})
		if err == nil || !strings.Contains(err.Error(), "checked out in the worktree at "+tt.at) {
			t.Errorf("commit on %s from %s: err = %v, want it refused", tt.branch, filepath.Base(tt.from), err)
		}
		if got := run(t, dir, "rev-parse", tt.branch); got != before {
			t.Errorf("%s moved to %s", tt.branch, got)
		}
	}
	if got := run(t, dir, "rev-parse", "main"); got != main {
		t.Errorf("main moved")
	}
	for _, wt := range []string{dir, linked} {
		if got := run(t, wt, "status", "--porcelain"); got != "" {
			t.Errorf("status of %s:\n%s", filepath.Base(wt), got)
		}
	}
}

// TestOpenBranchMustExist checks that a reading command does not get the
// branch a new one would start from.
func TestOpenBranchMustExist(t *testing.T) {
	dir := newLocal(t, shopFiles)
	origin := bare(t, t.TempDir(), "origin.git", shopFiles)
	for _, repo := range []string{dir, origin} {
		_, err := OpenBranch(testContext(t, time.Minute), BranchOptions{Repo: repo, Branch: "nope", MustExist: true})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
			t.Errorf("%s: err = %v, want not found naming the branch", repo, err)
		}
		b := openBranch(t, BranchOptions{Repo: repo, Branch: "main", MustExist: true})
		if !b.Exists() || len(b.Files()) != 1 {
			t.Errorf("%s: main exists=%v files=%v", repo, b.Exists(), paths(b.Files()))
		}
	}
}

// TestOpenBranchHEAD refuses a branch named HEAD, which git refuses to
// create: it would make "HEAD" ambiguous in the clone and on the remote.
func TestOpenBranchHEAD(t *testing.T) {
	dir := newLocal(t, shopFiles)
	origin := bare(t, t.TempDir(), "origin.git", shopFiles)
	for _, repo := range []string{dir, origin} {
		for _, name := range []string{"HEAD", "refs/heads/HEAD"} {
			b, err := OpenBranch(testContext(t, time.Minute), BranchOptions{Repo: repo, Branch: name})
			if err == nil {
				_, err = b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# head"), Author: person})
			}
			if err == nil || !strings.Contains(err.Error(), "invalid branch name") {
				t.Errorf("%s: branch %s: err = %v, want it refused", filepath.Base(repo), name, err)
			}
		}
		if got := run(t, repo, "for-each-ref", "--format=%(refname)", "refs/heads/"); got != "refs/heads/main" {
			t.Errorf("%s: branches:\n%s", filepath.Base(repo), got)
		}
	}
}

// TestChangeRemoteBranchCreatedMeanwhile creates the new branch on the
// remote between the edit and the push: the push of a creation fails, and
// the change is made again on the branch as it now is.
func TestChangeRemoteBranchCreatedMeanwhile(t *testing.T) {
	base := t.TempDir()
	origin := bare(t, base, "origin.git", shopFiles)
	ctx := testContext(t, time.Minute)
	b := openBranch(t, BranchOptions{Repo: origin, Branch: "pr"})
	var theirs string
	res, err := b.Change(ctx, ChangeRequest{File: "plans/shop.yaml", Edit: touch("# mine"), Author: person,
		Confirm: func(Edited) error {
			other := clonePerson(t, origin)
			writeFile(t, filepath.Join(other, "README.md"), "theirs\n")
			run(t, other, "commit", "-q", "-am", "theirs")
			run(t, other, "push", "-q", "origin", "HEAD:refs/heads/pr")
			theirs = run(t, other, "rev-parse", "HEAD")
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, origin, "log", "-1", "--format=%H %P", "pr"); got != string(res.Commit)+" "+theirs {
		t.Errorf("pr = %s, want %s on theirs %s", got, res.Commit, theirs)
	}
	if res.Created {
		t.Errorf("result = %+v: someone else created the branch", res)
	}
}
