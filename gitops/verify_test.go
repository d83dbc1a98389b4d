package gitops

import (
	"context"
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
