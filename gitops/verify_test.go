package gitops

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/internal/gittest"
)

// TestSyncSignature checks Snapshot.Signed against commits signed by a
// trusted key, by a key outside the ring, and not signed at all.
func TestSyncSignature(t *testing.T) {
	trusted := gittest.NewKey(t, "Tester", "t@example.com")
	other := gittest.NewKey(t, "Stranger", "s@example.com")
	root := t.TempDir()
	remote := gittest.Bare(t, root, "plans", map[string]string{"plans/a.yaml": "a: 1\n"})
	ctx := context.Background()
	repo, err := Open(ctx, Options{URL: remote, TrustedKeys: trusted.Public})
	if err != nil {
		t.Fatal(err)
	}
	work := gittest.Clone(t, remote)
	commit := func(key gittest.Key, content string, sign bool) {
		t.Helper()
		gittest.Write(t, filepath.Join(work, "plans", "a.yaml"), content)
		args := []string{"commit", "-q", "-am", "change"}
		if sign {
			args = append(args, "-S")
		}
		key.Git(t, work, args...)
		gittest.Git(t, work, "push", "-q", "origin", "HEAD:main")
	}

	for _, tc := range []struct {
		name    string
		key     gittest.Key
		sign    bool
		signed  bool
		problem string
	}{
		{"trusted", trusted, true, true, ""},
		{"unsigned", trusted, false, false, "unsigned"},
		{"unknown key", other, true, false, "signed by unknown key "},
	} {
		commit(tc.key, "a: "+tc.name+"\n", tc.sign)
		s, err := repo.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Signed != tc.signed || !strings.HasPrefix(s.SignatureProblem, tc.problem) || (tc.problem == "") != (s.SignatureProblem == "") {
			t.Errorf("%s: Signed %v, problem %q; want %v, %q", tc.name, s.Signed, s.SignatureProblem, tc.signed, tc.problem)
		}
		switch tc.name {
		case "trusted":
			if s.Signer != trusted.ID+" Tester <t@example.com>" {
				t.Errorf("signer %q, want %s and the user id", s.Signer, trusted.ID)
			}
		case "unknown key":
			if !strings.HasSuffix(s.SignatureProblem, other.ID) || s.Signer != "" {
				t.Errorf("problem %q, signer %q: want the unknown key %s named", s.SignatureProblem, s.Signer, other.ID)
			}
		}
	}

	// Without trusted keys nothing is verified.
	plain, err := Open(ctx, Options{URL: remote})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := plain.Sync(ctx); err != nil || s.Signed || s.SignatureProblem != "" {
		t.Errorf("without trusted keys: %+v, %v", s, err)
	}

	// A key ring that is not one fails Open.
	if _, err := Open(ctx, Options{URL: remote, TrustedKeys: "not a key"}); err == nil || !strings.Contains(err.Error(), "trusted keys") {
		t.Errorf("Open with a broken key ring: %v", err)
	}
}

// TestVerifyTampered checks that a signature over other content is bad.
func TestVerifyTampered(t *testing.T) {
	key := gittest.NewKey(t, "Tester", "t@example.com")
	remote := gittest.Bare(t, t.TempDir(), "plans", map[string]string{"plans/a.yaml": "a: 1\n"})
	work := gittest.Clone(t, remote)
	key.Git(t, work, "commit", "-q", "--allow-empty", "-S", "-m", "signed")
	gittest.Git(t, work, "push", "-q", "origin", "HEAD:main")
	repo, err := Open(context.Background(), Options{URL: remote, TrustedKeys: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := *repo.cur.head
	if signer, problem := verify(&c, key.Public); problem != "" {
		t.Fatalf("the untouched commit: signer %q, problem %q", signer, problem)
	}
	c.Message = "not what was signed"
	if _, problem := verify(&c, key.Public); problem != "bad signature" {
		t.Errorf("a tampered commit: problem %q, want bad signature", problem)
	}
}

// TestSyncSignaturesSincePreviousHead checks that Sync judges every commit
// a push brings, not only the newest: an unsigned commit under a signed
// head, however deep, makes the snapshot unsigned, and commits the Repo
// pushed itself are passed over.
func TestSyncSignaturesSincePreviousHead(t *testing.T) {
	key := gittest.NewKey(t, "Tester", "t@example.com")
	remote := gittest.Bare(t, t.TempDir(), "plans", map[string]string{"plans/a.yaml": "a: 0\n"})
	ctx := context.Background()
	work := gittest.Clone(t, remote)
	n := 0
	commit := func(sign bool) string {
		t.Helper()
		n++
		gittest.Write(t, filepath.Join(work, "plans", "a.yaml"), fmt.Sprintf("a: %d\n", n))
		args := []string{"commit", "-q", "-am", fmt.Sprintf("change %d", n)}
		if sign {
			args = append(args, "-S")
		}
		key.Git(t, work, args...)
		return gittest.Git(t, work, "rev-parse", "--short=12", "HEAD")
	}
	push := func() { gittest.Git(t, work, "push", "-q", "origin", "HEAD:main") }
	commit(true)
	push()
	repo, err := Open(ctx, Options{URL: remote, TrustedKeys: key.Public})
	if err != nil {
		t.Fatal(err)
	}
	sync := func(what string, signed bool, problem string) {
		t.Helper()
		s, err := repo.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.Signed != signed || s.SignatureProblem != problem {
			t.Errorf("%s: Signed %v, problem %q; want %v, %q", what, s.Signed, s.SignatureProblem, signed, problem)
		}
		if signed && s.Signer != key.ID+" Tester <t@example.com>" {
			t.Errorf("%s: signer %q", what, s.Signer)
		}
	}
	sync("first sync", true, "")
	// ownCommit commits a status file as the daemon does, through the Repo.
	ownCommit := func(status string) {
		t.Helper()
		if _, err := repo.Commit(ctx, CommitRequest{Message: "status", Author: Signature{"bot", "bot@example.com"},
			Changes: func(func(string) ([]byte, error)) (map[string][]byte, error) {
				return map[string][]byte{"status/a.yaml": []byte(status)}, nil
			}}); err != nil {
			t.Fatal(err)
		}
	}

	// Three signed commits in one push.
	commit(true)
	commit(true)
	commit(true)
	push()
	sync("three signed commits", true, "")

	// An unsigned commit under a signed one.
	unsigned := commit(false)
	commit(true)
	push()
	sync("an unsigned commit under a signed head", false, "commit "+unsigned+" below it: unsigned")

	// An unsigned commit forty commits down: deeper than the first
	// history fetched.
	unsigned = commit(false)
	for range 40 {
		commit(true)
	}
	push()
	sync("an unsigned commit 40 commits down", false, "commit "+unsigned+" below it: unsigned")

	// All signed again; the Repo's own commit on top of a person's signed
	// ones is passed over, and the person's are still checked.
	commit(true)
	push()
	sync("signed again", true, "")
	unsigned = commit(false)
	commit(true)
	push()
	ownCommit("kind: MigrationStatus\n")
	sync("the Repo's commit over an unsigned and a signed one", false, "commit "+unsigned+" below it: unsigned")
	gittest.Git(t, work, "pull", "-q", "--rebase", "origin", "main")
	commit(true)
	push()
	ownCommit("kind: MigrationStatus\nn: 2\n")
	sync("the Repo's commit over a signed one", true, "")

	// Only the Repo's own commits since: the previous verdict stands.
	ownCommit("kind: MigrationStatus\nn: 3\n")
	sync("only the Repo's own commit", true, "")

	// A rewritten history: the previous head is gone, and the walk down
	// from the new head meets commits never judged (here the daemon's own
	// from before, unsigned) or the root without meeting it.
	gittest.Git(t, work, "fetch", "-q", "origin")
	gittest.Git(t, work, "reset", "-q", "--hard", "origin/main~3")
	commit(true)
	gittest.Git(t, work, "push", "-q", "--force", "origin", "HEAD:main")
	s, err := repo.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Signed || s.SignatureProblem == "" {
		t.Errorf("after a force push: Signed %v, problem %q", s.Signed, s.SignatureProblem)
	}
}
