package gitops

import (
	"context"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/internal/gittest"
)

// TestSigningKey: a Repo with a signing key signs its commits, so that
// another Repo trusting the key (another daemon, or this one after a
// restart) finds them signed, and so does git verify-commit; a key that
// is not among the trusted keys, or holds no private key, fails Open.
func TestSigningKey(t *testing.T) {
	daemonKey := gittest.NewKey(t, "hal9-migrate", "bot@example.com")
	person := gittest.NewKey(t, "Person", "p@example.com")
	root := t.TempDir()
	remote := gittest.Bare(t, root, "plans", map[string]string{"plans/a.yaml": "a: 1\n"})
	ctx := context.Background()
	trusted := daemonKey.Public + person.Public

	signer, err := Open(ctx, Options{URL: remote, TrustedKeys: trusted, SigningKey: daemonKey.Secret})
	if err != nil {
		t.Fatal(err)
	}
	if !signer.Signs() {
		t.Fatal("Signs() is false with a signing key")
	}
	if _, err := signer.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	h, err := signer.Commit(ctx, CommitRequest{Message: "promote(a): canary → full", Author: Signature{Name: "hal9-migrate", Email: "bot@example.com"},
		Changes: func(func(string) ([]byte, error)) (map[string][]byte, error) {
			return map[string][]byte{"plans/a.yaml": []byte("a: 2\n")}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}

	other, err := Open(ctx, Options{URL: remote, TrustedKeys: trusted})
	if err != nil {
		t.Fatal(err)
	}
	s, err := other.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Signed || !strings.HasPrefix(s.Signer, daemonKey.ID) || s.Commit != h {
		t.Errorf("the daemon's commit as another repo sees it: signed %v by %q (%s), problem %q", s.Signed, s.Signer, s.Commit, s.SignatureProblem)
	}
	// The git CLI, with the key in its keyring, agrees.
	work := gittest.Clone(t, remote)
	if out := daemonKey.Git(t, work, "verify-commit", "--raw", "HEAD"); out != "" && !strings.Contains(out, "GOODSIG") && !strings.Contains(out, "VALIDSIG") {
		t.Errorf("git verify-commit: %s", out)
	}

	// A signing key outside the trusted ring, or no private key: Open
	// refuses, naming why.
	for _, tc := range []struct {
		name, key, trusted, want string
	}{
		{"untrusted", daemonKey.Secret, person.Public, "is not among the trusted keys"},
		{"public only", daemonKey.Public, trusted, "holds no private key"},
		{"garbage", "not a key", "", "read the signing key"},
	} {
		if _, err := Open(ctx, Options{URL: remote, TrustedKeys: tc.trusted, SigningKey: tc.key}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
