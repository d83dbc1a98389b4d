package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
)

func TestMain(m *testing.M) {
	dockertest.Main(m, func() {
		if binary.dir != "" {
			os.RemoveAll(binary.dir)
		}
	})
}

// binary is the hal9-migrate command, built once per test process.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
	out  []byte
}

// hal9 returns the path of the hal9-migrate binary, building it first.
func hal9(t testing.TB) string {
	t.Helper()
	binary.once.Do(func() {
		binary.dir, binary.err = os.MkdirTemp("", "hal9-e2e-")
		if binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "hal9-migrate")
		cmd := exec.Command("go", "build", "-o", binary.path, "github.com/hal9ai/hal9-migrate/cmd/hal9-migrate")
		binary.out, binary.err = cmd.CombinedOutput()
	})
	if binary.err != nil {
		t.Fatalf("build hal9-migrate: %v\n%s", binary.err, binary.out)
	}
	return binary.path
}

// proxy forwards TCP connections to a target, or, hung, accepts them and
// never answers: a server that is up and silent, the worst kind of outage
// for a client without deadlines.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	hung  bool
	conns map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go p.serve()
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Hang makes the proxy silent (true), closing the connections it carries so
// that the next ones are the silent kind, or forward again (false), closing
// the connections it held without an answer.
func (p *proxy) Hang(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hung = on
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = true
	p.mu.Unlock()
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		hung := p.hung
		p.mu.Unlock()
		p.track(c)
		if hung {
			go io.Copy(io.Discard, c) // read, and never answer
			continue
		}
		go func() {
			up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				c.Close()
				return
			}
			p.track(up)
			go func() { io.Copy(up, c); up.Close() }()
			io.Copy(c, up)
			c.Close()
		}()
	}
}

// app is a container of the test service.
type app struct {
	name, id, addr string
}

// env is the world a daemon runs in: the plan repository behind a proxy,
// Prometheus behind another, stable and candidate containers of the test
// service on the Docker engine, and nginx on the host routing between them.
type env struct {
	t        *testing.T
	dir      string
	remote   string // the bare repository
	gitProxy *proxy
	repoURL  string // git:// through gitProxy
	prom     *promtest.Server
	promURL  string // through promProxy
	promProx *proxy

	stable, candidate app
	nginx             *dockertest.HostNginx
	nginxDir          string
	upstream          string
}

// newEnv starts everything but the daemon, with the plans the repository
// starts with.
func newEnv(t *testing.T, plans map[string]func(e *env) string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), upstream: "shop"}
	labels := dockertest.Labels(t)
	image := dockertest.TestAppImage(t)
	base := dockertest.Name("shop")
	start := func(name, version string) app {
		// Limits, as production containers have: resources guardrails
		// read use in percent of them.
		id := dockertest.Start(t, dockertest.Container{Name: name, Image: image, Cmd: []string{"serve", "-version", version},
			Labels: labels, Publish: []string{"8080"}, Resources: container.Resources{NanoCPUs: 1e9, Memory: 256 << 20}})
		return app{name: name, id: id, addr: dockertest.HostAddr(t, id, "8080")}
	}
	e.stable = start(base, "v1")
	e.candidate = start(base+"-v2", "v2")
	for _, a := range []app{e.stable, e.candidate} {
		waitHTTP(t, "http://"+a.addr+"/health", 200)
	}

	e.prom = promtest.Start(t, promtest.Options{Targets: []string{e.stable.addr, e.candidate.addr}, ScrapeInterval: 250 * time.Millisecond})
	e.promProx = newProxy(t, strings.TrimPrefix(e.prom.URL, "http://"))
	e.promURL = "http://" + e.promProx.Addr()

	e.nginxDir = filepath.Join(e.dir, "nginx")
	e.nginx = dockertest.NewHostNginx(t, e.nginxDir, e.upstream)

	files := map[string]string{}
	for name, f := range plans {
		files["plans/"+name] = f(e)
	}
	e.startGit(t, files)
	return e
}

// startGit makes the plan repository with files (paths to content) in it
// and serves it with `git daemon` behind a proxy.
func (e *env) startGit(t *testing.T, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(e.dir, "git"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.remote = gittest.Bare(t, filepath.Join(e.dir, "git"), "plans", files)
	daemonURL := gittest.Daemon(t, filepath.Join(e.dir, "git"))
	e.gitProxy = newProxy(t, strings.TrimSuffix(strings.TrimPrefix(daemonURL, "git://"), "/"))
	e.repoURL = "git://" + e.gitProxy.Addr() + "/plans.git"
}

// push commits files (paths to content, "" removing one) to the plan
// repository, straight to its bare repository, and returns the commit. A
// push that loses a race with the daemon's is made again on the new head,
// as a person would: the files are written whole, so a rebase could only
// conflict.
func (e *env) push(t *testing.T, msg string, files map[string]string) string {
	t.Helper()
	for range 20 {
		work := gittest.Clone(t, e.remote)
		for p, content := range files {
			if content == "" {
				gittest.Git(t, work, "rm", "-q", "--ignore-unmatch", p)
				continue
			}
			gittest.Write(t, filepath.Join(work, p), content)
			gittest.Git(t, work, "add", p)
		}
		gittest.Git(t, work, "commit", "-q", "-m", msg)
		cmd := exec.Command("git", "-C", work, "push", "-q", "origin", "HEAD:main")
		cmd.Env = append(os.Environ(), gittest.Env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("push lost a race, again: %s", out)
			continue
		}
		return gittest.Git(t, work, "rev-parse", "HEAD")
	}
	t.Fatalf("push %q kept losing races", msg)
	return ""
}

// show returns a file of the plan repository's main branch.
func (e *env) show(t *testing.T, path string) string {
	t.Helper()
	return gittest.Git(t, e.remote, "show", "main:"+path)
}

// set changes the behaviour of a test service container (see
// testapp.App's /control).
func (e *env) set(t *testing.T, a app, fields map[string]string) {
	t.Helper()
	form := url.Values{}
	for k, v := range fields {
		form.Set(k, v)
	}
	res, err := http.PostForm("http://"+a.addr+"/control", form)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("control %s: %s", a.name, res.Status)
	}
}

// waitHTTP waits until url answers code.
func waitHTTP(t testing.TB, url string, code int) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := c.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == code {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within 30s (last: %v)", url, code, err)
		}
	}
}

// daemonProc is `hal9-migrate daemon` running as a process.
type daemonProc struct {
	cmd     *exec.Cmd
	url     string // its HTTP side
	logPath string
	done    chan struct{}
}

// startDaemon writes the daemon's configuration (the env's repository,
// Prometheus and nginx, with extra appended) and starts it.
func (e *env) startDaemon(t *testing.T, extra string) *daemonProc {
	t.Helper()
	port := dockertest.FreePort(t)
	quote := func(args []string) string {
		b, _ := json.Marshal(args)
		return string(b)
	}
	cfg := fmt.Sprintf(`repo: %s
dataDir: %s
listen: 127.0.0.1:%d
poll: 1s
interval: 1s
prometheus: {url: %s, timeout: 2s}
docker:
  nginxDir: %s
  nginxTest: %s
  nginxReload: %s
log: {level: debug}
%s`, e.repoURL, filepath.Join(e.dir, "data"), port, e.promURL, e.nginxDir, quote(e.nginx.Test()), quote(e.nginx.Reload()), extra)
	if !strings.Contains(extra, "statusInterval:") {
		cfg += "\nstatusInterval: 5s\n"
	}
	return e.runDaemon(t, port, cfg)
}

// runDaemon writes cfg, a whole configuration listening on port, and
// starts the daemon with it.
func (e *env) runDaemon(t *testing.T, port int, cfg string) *daemonProc {
	t.Helper()
	return e.launch(t, "daemon", port, cfg, "HAL9_MIGRATE_API_TOKEN=e2e-token")
}

// launch writes cfg, a whole configuration listening on port, to name.yaml
// and starts a daemon with it and the extra environment, its output
// appended to name.log and shown when the test fails.
func (e *env) launch(t *testing.T, name string, port int, cfg string, environ ...string) *daemonProc {
	t.Helper()
	cfgFile := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{url: fmt.Sprintf("http://127.0.0.1:%d", port), logPath: filepath.Join(e.dir, name+".log"), done: make(chan struct{})}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(hal9(t), "daemon", "--config", cfgFile)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = append(os.Environ(), environ...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logFile.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("HAL9_TEST_LOG") != "" {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("%s log (last 80 lines):\n%s", name, tail(string(b), 80))
		}
	})
	waitHTTP(t, p.url+"/healthz", 200)
	return p
}

// stop ends the daemon with SIGTERM, and SIGKILL after 20s.
func (p *daemonProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// migration returns the migration named name as the daemon's API shows it,
// with its history.
func (p *daemonProc) migration(name string) (daemon.Migration, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(p.url + "/api/v1/migrations/" + name + "?history=50")
	if err != nil {
		return daemon.Migration{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		return daemon.Migration{}, fmt.Errorf("%s: %s", res.Status, b)
	}
	var m daemon.Migration
	return m, json.NewDecoder(res.Body).Decode(&m)
}

// wait polls the migration until cond holds, failing after timeout.
func (p *daemonProc) wait(t *testing.T, name string, timeout time.Duration, what string, cond func(daemon.Migration) bool) daemon.Migration {
	t.Helper()
	var last daemon.Migration
	var err error
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		last, err = p.migration(name)
		if err == nil && cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s %s %s; err %v)", what, timeout, last.Position, last.State, last.Reason, err)
		}
	}
}

// memory returns the daemon's resident memory now and at its peak, in
// bytes.
func (p *daemonProc) memory(t *testing.T) (rss, peak int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		key, val, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}

// alive fails the test if the daemon has exited.
func (p *daemonProc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("the daemon exited: %v", p.cmd.ProcessState)
	default:
	}
}

// event returns the newest history entry of the migration whose action is
// action, or an error.
func event(m daemon.Migration, action string) (daemon.HistoryEntry, error) {
	for i := len(m.History) - 1; i >= 0; i-- {
		if m.History[i].Action == action {
			return m.History[i], nil
		}
	}
	return daemon.HistoryEntry{}, errors.New("no " + action + " in the history")
}
