// Package gittest makes real Git repositories and servers for tests: bare
// repositories made with the git CLI, and `git daemon` serving them on
// 127.0.0.1 with pushes enabled. It is for tests only.
package gittest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// Env isolates the git CLI from the machine's configuration and names the
// person committing.
var Env = []string{
	"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
	"GIT_AUTHOR_NAME=Person", "GIT_AUTHOR_EMAIL=person@example.com",
	"GIT_COMMITTER_NAME=Person", "GIT_COMMITTER_EMAIL=person@example.com",
	"GIT_TERMINAL_PROMPT=0",
}

// Git runs the git CLI in dir and returns its trimmed output.
func Git(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	return run(tb, nil, dir, args...)
}

func run(tb testing.TB, env []string, dir string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(append(os.Environ(), Env...), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return strings.TrimSpace(out.String())
}

// Bare makes base/name.git, a bare repository whose main branch has one
// commit holding files, and returns its path.
func Bare(tb testing.TB, base, name string, files map[string]string) string {
	tb.Helper()
	dir := filepath.Join(base, name+".git")
	Git(tb, base, "init", "-q", "--bare", "-b", "main", dir)
	Git(tb, dir, "config", "core.logAllRefUpdates", "always")
	work := Clone(tb, dir)
	for p, content := range files {
		Write(tb, filepath.Join(work, p), content)
	}
	Git(tb, work, "add", "-A")
	Git(tb, work, "commit", "-q", "-m", "initial plans")
	Git(tb, work, "push", "-q", "origin", "HEAD:main")
	return dir
}

// Clone clones url into a new temporary directory and returns it.
func Clone(tb testing.TB, url string) string {
	tb.Helper()
	dir := tb.TempDir()
	// --no-local: a repository on a path is read through git's transport,
	// a consistent snapshot, not by copying its object folders while a
	// push writes into them.
	Git(tb, dir, "clone", "-q", "--no-local", url, ".")
	Git(tb, dir, "checkout", "-q", "-B", "main")
	return dir
}

// Write writes a file, making its directory.
func Write(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// Daemon serves the repositories under base with `git daemon` on 127.0.0.1,
// pushes enabled, until the test ends, and returns its git:// URL prefix.
func Daemon(tb testing.TB, base string) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("git", "daemon", "--reuseaddr", "--base-path="+base, "--export-all",
		"--enable=receive-pack", "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port), base)
	cmd.Env = append(os.Environ(), Env...)
	// `git daemon` runs git-daemon as a child: give them a process group
	// of their own and kill the group, or the child outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("git daemon did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "git://" + addr + "/"
}

// PushRebasing pushes dir's HEAD to origin's main, pulling with rebase and
// trying again when a concurrent push got there first, a bounded number of
// times, as a person would.
func PushRebasing(tb testing.TB, dir string) {
	tb.Helper()
	var last string
	for range 20 {
		cmd := exec.Command("git", "-C", dir, "push", "-q", "origin", "HEAD:main")
		cmd.Env = append(os.Environ(), Env...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return
		}
		last = string(out)
		Git(tb, dir, "pull", "-q", "--rebase", "origin", "main")
	}
	tb.Fatalf("push from %s kept losing races: %s", dir, last)
}

// Key is an OpenPGP signing key in a GnuPG home of its own.
type Key struct {
	Home   string // GNUPGHOME
	ID     string // the long key id, upper case
	Public string // the armored public key
	Secret string // the armored private key, without a passphrase
}

// NewKey makes an ed25519 signing key for name <email> in a new GnuPG home
// (rsa2048 when gpg refuses ed25519), removed with the gpg-agent when the
// test ends. The test skips when gpg is not installed.
func NewKey(tb testing.TB, name, email string) Key {
	tb.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		testenv.Missing(tb, "gpg is not installed (apt-get install gnupg); signed commits cannot be made")
	}
	// Not tb.TempDir: gpg-agent's socket path must stay short.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run()
		os.RemoveAll(home)
	})
	gpg := func(args ...string) (string, error) {
		cmd := exec.Command("gpg", append([]string{"--batch", "--homedir", home}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("gpg %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String(), err
	}
	uid := name + " <" + email + ">"
	if _, err := gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"); err != nil {
		if _, err := gpg("--passphrase", "", "--quick-gen-key", uid, "rsa2048", "sign", "never"); err != nil {
			tb.Fatal(err)
		}
	}
	list, err := gpg("--with-colons", "--list-secret-keys", email)
	if err != nil {
		tb.Fatal(err)
	}
	k := Key{Home: home}
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Split(line, ":"); len(f) > 4 && f[0] == "sec" {
			k.ID = strings.ToUpper(f[4])
			break
		}
	}
	if k.ID == "" {
		tb.Fatalf("no key id in gpg's listing:\n%s", list)
	}
	if k.Public, err = gpg("--armor", "--export", k.ID); err != nil {
		tb.Fatal(err)
	}
	if k.Secret, err = gpg("--pinentry-mode", "loopback", "--passphrase", "", "--armor", "--export-secret-keys", k.ID); err != nil {
		tb.Fatal(err)
	}
	return k
}

// Git runs the git CLI in dir, as Git does, with commits signed by k
// (add -S to commit).
func (k Key) Git(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	return run(tb, []string{"GNUPGHOME=" + k.Home}, dir,
		append([]string{"-c", "gpg.program=gpg", "-c", "user.signingkey=" + k.ID}, args...)...)
}
