package gitops

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// The tests in this package run against real git servers on 127.0.0.1,
// started by the tests themselves: `git daemon` for git://, `git
// http-backend` behind net/http/cgi for http:// and https://, and bare
// repositories on disk for file:// and local paths. Repositories are made
// with the git CLI.

// gitEnv isolates the git CLI from the machine's configuration.
var gitEnv = []string{
	"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
	"GIT_AUTHOR_NAME=Person", "GIT_AUTHOR_EMAIL=person@example.com",
	"GIT_COMMITTER_NAME=Person", "GIT_COMMITTER_EMAIL=person@example.com",
	"GIT_TERMINAL_PROMPT=0",
}

func needGit(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(tb, "git CLI not found: %v (install git to run the gitops tests)", err)
	}
}

// run runs git in dir and returns its trimmed output.
func run(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	out, err := tryGit(dir, nil, args...)
	if err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func tryGit(dir string, stdin []byte, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), gitEnv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// bare makes a bare repository named name under base, with a first commit
// on main holding files, and returns its path.
func bare(tb testing.TB, base, name string, files map[string]string) string {
	tb.Helper()
	needGit(tb)
	dir := filepath.Join(base, name)
	run(tb, base, "init", "-q", "--bare", "-b", "main", dir)
	// Pushes over http need this; reflogs let the race test check that
	// every update of the branch was a fast-forward.
	run(tb, dir, "config", "http.receivepack", "true")
	run(tb, dir, "config", "core.logAllRefUpdates", "always")
	if files != nil {
		work := tb.TempDir()
		run(tb, work, "init", "-q", "-b", "main")
		for p, content := range files {
			writeFile(tb, filepath.Join(work, p), content)
		}
		run(tb, work, "add", "-A")
		run(tb, work, "commit", "-q", "-m", "initial plans")
		run(tb, work, "push", "-q", dir, "main")
	}
	return dir
}

func writeFile(tb testing.TB, p, content string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// gitDaemon serves every repository under base over git:// on 127.0.0.1,
// pushes enabled, and returns the URL prefix ("git://127.0.0.1:PORT/").
func gitDaemon(tb testing.TB, base string) string {
	tb.Helper()
	needGit(tb)
	for range 5 {
		port := freePort(tb)
		cmd := exec.Command("git", "daemon", "--reuseaddr", "--base-path="+base, "--export-all",
			"--enable=receive-pack", "--listen=127.0.0.1", "--port="+strconv.Itoa(port), base)
		cmd.Env = append(os.Environ(), gitEnv...)
		// `git daemon` runs git-daemon as a child, which forks a child
		// per connection: a process group of their own lets the
		// cleanup stop them all.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.WaitDelay = 5 * time.Second
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start git daemon: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if waitListening(addr, exited) {
			tb.Cleanup(func() {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			})
			return "git://" + addr + "/"
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		tb.Logf("git daemon on port %d did not start (retrying on another port): %s", port, stderr.String())
	}
	tb.Fatal("git daemon did not start")
	return ""
}

func waitListening(addr string, exited chan error) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// httpBackend is `git http-backend` for the repositories under base, as a
// net/http handler.
func httpBackend(tb testing.TB, base string) http.Handler {
	tb.Helper()
	needGit(tb)
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		tb.Fatalf("git --exec-path: %v", err)
	}
	return &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: append([]string{"GIT_PROJECT_ROOT=" + base, "GIT_HTTP_EXPORT_ALL=1"},
			gitEnv...),
		// The backend's complaints ("cannot lock ref" when a push loses
		// a race) reach the client too; here they would only clutter
		// the test output.
		Stderr: io.Discard,
	}
}

// httpServer serves the repositories under base over http:// on 127.0.0.1
// and returns the URL prefix.
func httpServer(tb testing.TB, base string) string {
	tb.Helper()
	srv := httptest.NewServer(httpBackend(tb, base))
	tb.Cleanup(srv.Close)
	return srv.URL + "/"
}

// basicAuth lets through only requests with the basic-auth password token.
func basicAuth(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pass, ok := r.BasicAuth()
		if !ok || pass != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fastImport fills the bare repository dir with n commits on main, each
// changing one of 50 status files, on top of a commit holding one plan, in
// a second or two: git fast-import writes the pack directly.
func fastImport(tb testing.TB, dir string, n int) {
	tb.Helper()
	var b bytes.Buffer
	data := func(s string) { fmt.Fprintf(&b, "data %d\n%s\n", len(s), s) }
	ts := int64(1_700_000_000)
	fmt.Fprintf(&b, "commit refs/heads/main\nmark :1\ncommitter Person <person@example.com> %d +0000\n", ts)
	data("initial plans")
	b.WriteString("M 100644 inline plans/hal9.yaml\n")
	data(planYAML("hal9", "canary", 10))
	for i := 2; i <= n; i++ {
		fmt.Fprintf(&b, "commit refs/heads/main\nmark :%d\ncommitter Person <person@example.com> %d +0000\n", i, ts+int64(i))
		data(fmt.Sprintf("change %d", i))
		fmt.Fprintf(&b, "from :%d\nM 100644 inline status/s%02d.yaml\n", i-1, i%50)
		data(fmt.Sprintf("round: %d\n", i))
	}
	b.WriteString("done\n")
	if out, err := tryGit(dir, b.Bytes(), "fast-import", "--quiet", "--done"); err != nil {
		tb.Fatalf("git fast-import: %v\n%s", err, out)
	}
}

func planYAML(name, phase string, pct int) string {
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: %s
spec:
  target:
    phase: %s
    percentage: %d
`, name, phase, pct)
}

func testContext(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}
