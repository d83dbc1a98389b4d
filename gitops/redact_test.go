package gitops

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://user:S3cretPW@[::1/repo.git", "https://user:xxxxx@[::1/repo.git"},
		{"https://user:S3cretPW@host:badport/x", "https://user:xxxxx@host:badport/x"},
		{"https://user:S3cretPW@example.com/r.git", "https://user:xxxxx@example.com/r.git"},
		{"https://user:S3cret%2FPW@example.com/r.git", "https://user:xxxxx@example.com/r.git"},
		{"https://user:S3c/ret@exa mple.com/r.git", "https://user:xxxxx@exa mple.com/r.git"},
		{"https://ghp_T0kenValue@github.com/org/plans.git", "https://xxxxx@github.com/org/plans.git"},
		{"https://example.com/r.git?private_token=T0kenValue&x=1", "https://example.com/r.git?private_token=xxxxx&x=xxxxx"},
		{"https://example.com/r.git?private_token=T0kenValue#frag", "https://example.com/r.git?private_token=xxxxx#frag"},
		{"https://exa mple.com/r.git?private_token=T0kenValue", "https://exa mple.com/r.git?private_token=xxxxx"},
		{"ssh://git@example.com/org/plans.git", "ssh://git@example.com/org/plans.git"},
		{"ssh://git:S3cretPW@example.com/org/plans.git", "ssh://git:xxxxx@example.com/org/plans.git"},
		{"git@github.com:org/plans.git", "git@github.com:org/plans.git"},
		{"user:S3cretPW@github.com:org/plans.git", "user:xxxxx@github.com:org/plans.git"},
		{"/srv/git/r@b:c.git", "/srv/git/r@b:c.git"},
		{"git://127.0.0.1:9418/r.git", "git://127.0.0.1:9418/r.git"},
		{"https://example.com/r.git", "https://example.com/r.git"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSecretsNeverShown opens repositories by URLs that carry a password or
// a token, which fail in every way they can, and checks that no error
// shows the secret.
func TestSecretsNeverShown(t *testing.T) {
	ctx := testContext(t, time.Minute)
	port := freePort(t) // nothing listens there
	const secret = "S3cretPW"
	token := filepath.Join(t.TempDir(), "token")
	writeFile(t, token, "file-token")
	for _, url := range []string{
		// The report: url.Parse quotes the URL in its error.
		"https://user:" + secret + "@[::1/repo.git",
		"https://user:" + secret + "@host:badport/x",
		"https://user:" + secret + "@exa mple.com/x",
		"https://user:%zz" + secret + "@example.com/x",
		"https://" + secret + "@[::1/repo.git",
		fmt.Sprintf("http://127.0.0.1:%d/r.git?private_token=%s&%%zz", port, secret),
		"ftp://user:" + secret + "@example.com/r.git",
		"ssh://git:" + secret + "@127.0.0.1:" + fmt.Sprint(port) + "/r.git",
		"user:" + secret + "@127.0.0.1:r.git",
		fmt.Sprintf("http://user:%s@127.0.0.1:%d/r.git", secret, port),
		fmt.Sprintf("http://%s@127.0.0.1:%d/r.git", secret, port),
		fmt.Sprintf("http://127.0.0.1:%d/r.git?private_token=%s", port, secret),
		fmt.Sprintf("http://user:%s@127.0.0.1:%d/r.git?private_token=%s", url2(secret), port, secret),
	} {
		for _, o := range []Options{{URL: url}, {URL: url, Auth: Auth{TokenFile: token}}} {
			_, err := Open(ctx, o)
			if err == nil {
				t.Errorf("Open(%s) succeeded", Redact(url))
				continue
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), url2(secret)) {
				t.Errorf("Open: the error shows the secret: %v", err)
			}
			t.Logf("%v", err)
		}
		if _, err := OpenBranch(ctx, BranchOptions{Repo: url}); err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("OpenBranch: %v, want an error without the secret", err)
		}
		for _, s := range []string{Redact(url), fmt.Sprint(Options{URL: url}), fmt.Sprintf("%+v", Options{URL: url}), fmt.Sprintf("%#v", Options{URL: url}),
			fmt.Sprint(BranchOptions{Repo: url}), fmt.Sprintf("%#v", BranchOptions{Repo: url})} {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows the secret", s)
			}
		}
	}
	if _, err := parseEndpoint("https://user:" + secret + "@[::1/repo.git"); err == nil ||
		err.Error() != `invalid URL https://user:xxxxx@[::1/repo.git: missing ']' in host` {
		t.Errorf("parseEndpoint: %v", err)
	}
	var ue interface{ Unwrap() error }
	if _, err := parseEndpoint("https://u:" + secret + "@[::1"); errors.As(err, &ue) {
		t.Errorf("parseEndpoint wraps an error that may quote the URL: %#v", err)
	}
}

// url2 is s percent-encoded in part, as a password may be written.
func url2(s string) string { return strings.Replace(s, "S", "%53", 1) }

// TestPushOriginSecretsNeverShown pushes a local clone whose origin URL
// carries a password, to nowhere.
func TestPushOriginSecretsNeverShown(t *testing.T) {
	const secret = "S3cretPW"
	port := freePort(t)
	for _, origin := range []string{
		fmt.Sprintf("http://user:%s@127.0.0.1:%d/r.git", secret, port),
		fmt.Sprintf("http://%s@127.0.0.1:%d/r.git", secret, port),
		"https://user:" + secret + "@[::1/repo.git",
	} {
		dir := newLocal(t, shopFiles)
		run(t, dir, "remote", "add", "origin", origin)
		b := openBranch(t, BranchOptions{Repo: dir, Push: true})
		_, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/shop.yaml", Edit: touch("# pushed"), Author: person})
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("push to %s: %v, want an error without the secret", Redact(origin), err)
		}
		t.Logf("%v", err)
	}
}
