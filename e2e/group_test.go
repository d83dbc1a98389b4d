package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// The lockstep group scenarios: two services of the test service, "a" and
// "b", each its own stable and candidate containers (versions a1/a2 and
// b1/b2), its own nginx upstream on one host nginx (two servers, one port
// each) and its own plan, in group "pair". Not parallel: each brings up
// four containers under load, as TestCompareWithStable does.

// groupSvc is one member's service.
type groupSvc struct {
	name              string // the plan's and the upstream's
	stable, candidate app
	addr              string // its nginx server
	soak              string
}

// groupEnv is an env with two services instead of one.
type groupEnv struct {
	*env
	svcs []*groupSvc
}

// groupSteps are the canary steps each member climbs; level i+1 is
// steps[i], level 0 start.
var groupSteps = []int{10, 30, 60}

// yaml is the member's plan: canary 10, 30, 60 with its own soak, an
// error-rate guardrail on its candidate (errors-NAME), rollback to start.
func (s *groupSvc) yaml(target int, extra string) string {
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: %[1]s
spec:
  group: pair
  target: {phase: canary, percentage: %[2]d}
  driver:
    docker:
      stable: {container: %[3]s}
      candidate: {container: %[4]s}
      traffic: {nginx: {upstream: %[1]s}}
  phases:
    - name: canary
      steps: [10, 30, 60]
      soak: %[5]s
  guardrails:
    - name: errors-%[1]s
      prometheus:
        query: '(sum(rate(http_requests_total{version="%[1]s2",code="500"}[2s])) or vector(0)) / sum(rate(http_requests_total{version="%[1]s2"}[2s]))'
      max: 0.2
      for: 2s
  rollback: {to: start, onNoData: hold}
%[6]s`, s.name, target, s.stable.name, s.candidate.name, s.soak, extra)
}

// newGroupEnv starts the two services, Prometheus scraping the four
// containers, the plan repository with both plans (target canary 60%), and
// writes nginx's configuration; startGroup starts the daemon, nginx and
// load.
func newGroupEnv(t *testing.T, soakA, soakB string) *groupEnv {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), upstream: "a"}
	g := &groupEnv{env: e}
	labels := dockertest.Labels(t)
	image := dockertest.TestAppImage(t)
	start := func(name, version string) app {
		id := dockertest.Start(t, dockertest.Container{Name: name, Image: image, Cmd: []string{"serve", "-version", version},
			Labels: labels, Publish: []string{"8080"}, Resources: container.Resources{NanoCPUs: 1e9, Memory: 256 << 20}})
		return app{name: name, id: id, addr: dockertest.HostAddr(t, id, "8080")}
	}
	var targets []string
	for _, x := range []struct{ name, soak string }{{"a", soakA}, {"b", soakB}} {
		base := dockertest.Name("grp" + x.name)
		s := &groupSvc{name: x.name, soak: x.soak, stable: start(base, x.name+"1"), candidate: start(base+"-v2", x.name+"2")}
		for _, a := range []app{s.stable, s.candidate} {
			waitHTTP(t, "http://"+a.addr+"/health", 200)
			targets = append(targets, a.addr)
		}
		g.svcs = append(g.svcs, s)
	}
	e.stable, e.candidate = g.svcs[0].stable, g.svcs[0].candidate

	e.prom = promtest.Start(t, promtest.Options{Targets: targets, ScrapeInterval: 250 * time.Millisecond})
	e.promProx = newProxy(t, strings.TrimPrefix(e.prom.URL, "http://"))
	e.promURL = "http://" + e.promProx.Addr()

	// One nginx, a server per upstream, through the files the driver
	// renders for each.
	e.nginxDir = filepath.Join(e.dir, "nginx")
	e.nginx = dockertest.NewHostNginx(t, e.nginxDir, "a")
	var b strings.Builder
	fmt.Fprintf(&b, "worker_processes 2;\npid %[1]s/nginx.pid;\nerror_log %[1]s/error.log warn;\nevents { worker_connections 1024; }\nhttp {\n    access_log off;\n", e.nginx.Dir)
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s/tmp/%s;\n", p, e.nginx.Dir, p)
	}
	for i, s := range g.svcs {
		s.addr = e.nginx.Addr
		if i > 0 {
			s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(dockertest.FreePort(t)))
		}
		fmt.Fprintf(&b, `    include %[1]s/%[2]s.http.conf;
    server {
        listen %[3]s;
        include %[1]s/%[2]s.server.conf;
        location / {
            proxy_pass http://%[2]s;
            proxy_set_header Host $host;
        }
    }
`, e.nginxDir, s.name, s.addr)
	}
	b.WriteString("}\n")
	// nginx -t checks the whole configuration: until the driver of the
	// other member rendered its files, the first member's test would fail
	// on the other's missing include, and the other's on the first's. An
	// operator seeds them, as here, each upstream on its stable.
	if err := os.MkdirAll(e.nginxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range g.svcs {
		dockertest.WriteFile(t, e.nginxDir, s.name+".http.conf", fmt.Sprintf("upstream %s { server %s; }\n", s.name, s.stable.addr))
		dockertest.WriteFile(t, e.nginxDir, s.name+".server.conf", "")
	}
	if err := os.WriteFile(e.nginx.Conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	files := map[string]string{}
	for _, s := range g.svcs {
		files["plans/"+s.name+".yaml"] = s.yaml(60, "")
	}
	e.startGit(t, files)
	return g
}

// startGroup starts the daemon with extra configuration, nginx once the
// daemon rendered both upstreams' files, and load through both servers.
func (g *groupEnv) startGroup(t *testing.T, extra string) *daemonProc {
	t.Helper()
	d := g.startDaemon(t, extra)
	for _, s := range g.svcs {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(g.nginxDir, s.name+".http.conf")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon did not render nginx's files for %s", s.name)
			}
		}
	}
	g.nginx.Start(t)
	for _, s := range g.svcs {
		loadAt(t, s.addr)
	}
	// nginx's files can be there before the daemon's first sync has
	// ended (a daemon slow to start was asked for plan a and answered
	// 404): wait until its API follows every member.
	for _, s := range g.svcs {
		d.wait(t, s.name, 60*time.Second, "the daemon follows "+s.name, func(daemon.Migration) bool { return true })
	}
	return d
}

// loadAt sends 100 requests a second to addr, bounded in time and count,
// until the test ends.
func loadAt(t *testing.T, addr string) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		c := &http.Client{Timeout: time.Second}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(10 * time.Minute)
		for n := 0; n < 60_000 && time.Now().Before(deadline); n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if res, err := c.Get("http://" + addr + "/"); err == nil {
				res.Body.Close()
			}
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// level is how far up the canary steps a position stands: 0 at start.
func level(p plan.Position) int {
	n := 0
	for _, s := range groupSteps {
		if !p.IsStart() && p.Percentage >= s {
			n++
		}
	}
	return n
}

// levelOf is level for a position as the history writes it.
func levelOf(s string) int {
	for i := len(groupSteps) - 1; i >= 0; i-- {
		if s == pos(groupSteps[i]).String() {
			return i + 1
		}
	}
	return 0
}

// both returns the two members as the API shows them.
func (d *daemonProc) both() (a, b daemon.Migration, err error) {
	if a, err = d.migration("a"); err != nil {
		return
	}
	b, err = d.migration("b")
	return
}

// groupCommits returns the commits on main whose trailer names group
// pair, newest first.
func (g *groupEnv) groupCommits(t *testing.T) []string {
	t.Helper()
	out := gittest.Git(t, g.remote, "log", "--format=%H", "--grep=Hal9-Migrate-Group: pair", "main")
	if out == "" {
		return nil
	}
	return strings.Fields(out)
}

// files returns the files a commit touched.
func (g *groupEnv) files(t *testing.T, commit string) []string {
	t.Helper()
	return strings.Fields(gittest.Git(t, g.remote, "show", "--format=", "--name-only", commit))
}

// checkGroupRollback checks that exactly one commit rolled group pair back,
// touching both plan files, with no status saying RolledBack before it,
// and that its message names breacher's guardrail and the member the
// other followed; it returns the message.
func (g *groupEnv) checkGroupRollback(t *testing.T, breacher, other string) string {
	t.Helper()
	var cs []string
	waitFor(t, 30*time.Second, "the group's rollback committed", func() bool {
		cs = g.groupCommits(t)
		return len(cs) > 0 && strings.Contains(g.show(t, "plans/"+breacher+".yaml"), "percentage: 0}") &&
			strings.Contains(g.show(t, "plans/"+other+".yaml"), "percentage: 0}")
	})
	time.Sleep(2 * time.Second) // a second commit would show by now
	cs = g.groupCommits(t)
	msg := gittest.Git(t, g.remote, "log", "-1", "--format=%B", cs[0])
	t.Logf("the group's rollback commit:\n%s", msg)
	if len(cs) != 1 {
		t.Errorf("%d commits rolled group pair back, want one:\n%s", len(cs), gittest.Git(t, g.remote, "log", "--format=%h %s", "main"))
	}
	files := g.files(t, cs[0])
	if strings.Join(files, " ") != "plans/a.yaml plans/b.yaml" {
		t.Errorf("the group's rollback commit touched %v, want both plan files", files)
	}
	// No status saying a member rolled back reached Git before the
	// rollback's commit did: plan files and status files never disagree.
	for _, f := range strings.Fields(gittest.Git(t, g.remote, "ls-tree", "-r", "--name-only", cs[0]+"^", "--", "status")) {
		if st := gittest.Git(t, g.remote, "show", cs[0]+"^:"+f); strings.Contains(st, "state: RolledBack") {
			t.Errorf("%s said RolledBack before the group's rollback commit:\n%s", f, gittest.Git(t, g.remote, "log", "--format=%h %s", "main"))
		}
	}
	subject, _, _ := strings.Cut(msg, "\n")
	for _, want := range []string{"rollback(group pair): ", "a canary 60% → start", "b canary 60% → start"} {
		if !strings.Contains(subject, want) {
			t.Errorf("the subject lacks %q: %s", want, subject)
		}
	}
	for _, want := range []string{
		breacher + ": Guardrail errors-" + breacher + " was ",
		other + ": followed member " + breacher + " of group pair",
		"Hal9-Migrate-Group: pair",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the message lacks %q", want)
		}
	}
	// Nothing else touched the plan files since: no member's rollback in a
	// commit of its own.
	log := gittest.Git(t, g.remote, "log", "--format=%h %s", "main", "--", "plans/a.yaml", "plans/b.yaml")
	if n := strings.Count(log, "rollback"); n != 1 {
		t.Errorf("%d rollback commits touched the plan files:\n%s", n, log)
	}
	return msg
}

// TestGroupLockstepFault: two services in group pair, soaking 2s and 5s a
// step, climb canary 10 → 30 → 60 in lockstep: no member is ever more than
// one step ahead, none leaves a step before the other reached it, and each
// holds every step the slower member's soak. A fault in a's candidate then
// rolls both back to start in one commit touching both plan files, which
// names a's guardrail and says b followed a; b's status names a, and
// neither moves again without a newer commit.
func TestGroupLockstepFault(t *testing.T) {
	g := newGroupEnv(t, "2s", "5s")
	d := g.startGroup(t, "")

	type seen struct {
		at     time.Time
		la, lb int
	}
	var samples []seen
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(25 * time.Millisecond) {
		a, b, err := d.both()
		if err != nil {
			t.Fatal(err)
		}
		s := seen{time.Now(), level(a.Position), level(b.Position)}
		if n := len(samples); n == 0 || samples[n-1].la != s.la || samples[n-1].lb != s.lb {
			samples = append(samples, s)
		}
		if s.la-s.lb > 1 || s.lb-s.la > 1 {
			t.Fatalf("a at %s and b at %s: more than one step apart", a.Position, b.Position)
		}
		if s.la == len(groupSteps) && s.lb == len(groupSteps) && a.State != "Progressing" && b.State != "Progressing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group did not reach canary 60%% within 2m: a %s %s (%s), b %s %s (%s)", a.Position, a.State, a.Reason, b.Position, b.State, b.Reason)
		}
	}
	var path []string
	for _, s := range samples {
		path = append(path, fmt.Sprintf("%d/%d", s.la, s.lb))
	}
	t.Logf("levels a/b as sampled: %s", strings.Join(path, " → "))

	// The histories, to the recorded instant: when each member entered
	// each level on its way up.
	a, b, err := d.both()
	if err != nil {
		t.Fatal(err)
	}
	entered := map[string]map[int]time.Time{}
	for _, m := range []daemon.Migration{a, b} {
		entered[m.Name] = map[int]time.Time{0: {}}
		for _, h := range m.History {
			if h.Action == "Advance" {
				entered[m.Name][levelOf(h.To)] = h.At
			}
		}
		for l := 1; l <= len(groupSteps); l++ {
			if entered[m.Name][l].IsZero() {
				t.Fatalf("%s's history has no advance to level %d: %+v", m.Name, l, m.History)
			}
		}
	}
	for l := 1; l <= len(groupSteps); l++ {
		ta, tb := entered["a"][l], entered["b"][l]
		t.Logf("level %d (%s): a entered at %s, b at %s", l, pos(groupSteps[l-1]), ta.Format("15:04:05.000"), tb.Format("15:04:05.000"))
		// Leaving level l-1 is entering level l: the other member had
		// reached l-1 before.
		if l > 1 {
			if ta.Before(entered["b"][l-1]) || tb.Before(entered["a"][l-1]) {
				t.Errorf("a member left level %d before the other reached it", l-1)
			}
			// Both held level l-1 for the slower soak (5s), less the
			// store's and clock's slack.
			for _, n := range []string{"a", "b"} {
				if stay := entered[n][l].Sub(entered[n][l-1]); stay < 5*time.Second-200*time.Millisecond {
					t.Errorf("%s left %s after %s, before b's soak of 5s had passed", n, pos(groupSteps[l-2]), stay)
				}
			}
		}
		if d := ta.Sub(tb).Abs(); d > 2*time.Second {
			t.Errorf("level %d: the members entered %s apart, not in one step of the group", l, d)
		}
	}

	// A fault in a's candidate alone.
	g.set(t, g.svcs[0].candidate, map[string]string{"errorRate": "1"})
	a = d.wait(t, "a", time.Minute, "a rolled back", func(m daemon.Migration) bool { return m.Position.IsStart() })
	b = d.wait(t, "b", 10*time.Second, "b rolled back with a", func(m daemon.Migration) bool { return m.Position.IsStart() })
	ra, err := event(a, "Rollback")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := event(b, "Rollback")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a: %s\nb: %s", ra.Reason, rb.Reason)
	if !strings.Contains(ra.Reason, "errors-a") {
		t.Errorf("a's rollback does not name its guardrail: %s", ra.Reason)
	}
	if !strings.Contains(rb.Reason, "member a") || !strings.Contains(rb.Reason, "errors-a") {
		t.Errorf("b's rollback does not name member a and its guardrail: %s", rb.Reason)
	}
	if d := ra.At.Sub(rb.At).Abs(); d > 2*time.Second {
		t.Errorf("the members rolled back %s apart, not in one step", d)
	}
	if !strings.Contains(b.Reason, "member a") {
		t.Errorf("b's status reason does not name member a: %s", b.Reason)
	}
	if n := len(b.Failed); n == 0 || !strings.Contains(b.Failed[n-1].Reason, "member a") {
		t.Errorf("b's failed positions do not name member a: %+v", b.Failed)
	}

	g.checkGroupRollback(t, "a", "b")
	waitFor(t, 30*time.Second, "b's status file names member a", func() bool {
		st := g.show(t, "status/b.yaml")
		return strings.Contains(st, "state: RolledBack") && strings.Contains(st, "member a")
	})

	// At rest: neither member enters a step again under this commit, even
	// with the fault gone.
	g.set(t, g.svcs[0].candidate, map[string]string{"errorRate": "0"})
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		a, b, err := d.both()
		if err != nil {
			t.Fatal(err)
		}
		if !a.Position.IsStart() || !b.Position.IsStart() {
			t.Fatalf("after the group's rollback: a %s (%s), b %s (%s)", a.Position, a.Reason, b.Position, b.Reason)
		}
	}
}

// TestGroupKillMidStep: the daemon killed with SIGKILL in the middle of the
// group's rollback, after member a's was applied and recorded and while
// b's is being applied (nginx's reload made to take 3s), resumes on the
// same data directory and finishes it: both members at start, one commit
// moving both plan files and naming both.
func TestGroupKillMidStep(t *testing.T) {
	g := newGroupEnv(t, "2s", "2s")
	// nginx, through a wrapper that makes a reload take 3s while the file
	// slow exists.
	slow := filepath.Join(g.dir, "slow-reload")
	wrapper := filepath.Join(g.dir, "nginx-wrapper")
	script := fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *'-s reload'*) if [ -e %q ]; then sleep 3; fi;; esac\nexec %q \"$@\"\n", slow, g.nginx.Bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	g.nginx.Bin = wrapper
	d := g.startGroup(t, "")
	d.wait(t, "a", 2*time.Minute, "a at rest at canary 60%", func(m daemon.Migration) bool { return m.Position == pos(60) && m.State != "Progressing" })
	d.wait(t, "b", 30*time.Second, "b at rest at canary 60%", func(m daemon.Migration) bool { return m.Position == pos(60) && m.State != "Progressing" })

	if err := os.WriteFile(slow, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g.set(t, g.svcs[0].candidate, map[string]string{"errorRate": "1"})
	// Kill as soon as one member's rollback shows, the other still above.
	var first string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		a, b, err := d.both()
		if err == nil && (a.Position.IsStart() || b.Position.IsStart()) {
			first = fmt.Sprintf("a %s %v, b %s %v", a.Position, a.Pending, b.Position, b.Pending)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no member rolled back within 1m: a %s (%s), b %s (%s)", a.Position, a.Reason, b.Position, b.Reason)
		}
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	t.Logf("killed at: %s", first)
	if err := os.Remove(slow); err != nil {
		t.Fatal(err)
	}
	// The daemon reads the plans back from its store and Git.
	d = g.startDaemon(t, "")
	a := d.wait(t, "a", time.Minute, "a at start after the restart", func(m daemon.Migration) bool { return m.Position.IsStart() && m.Pending == nil })
	b := d.wait(t, "b", time.Minute, "b at start after the restart", func(m daemon.Migration) bool { return m.Position.IsStart() && m.Pending == nil })
	t.Logf("after the restart: a %s %s (%s); b %s %s (%s)", a.Position, a.State, a.Reason, b.Position, b.State, b.Reason)
	for _, m := range []daemon.Migration{a, b} {
		if m.State != "RolledBack" {
			t.Errorf("%s: state %s, want RolledBack", m.Name, m.State)
		}
	}
	if !strings.Contains(b.Reason+fmt.Sprint(b.Failed), "member a") {
		t.Errorf("b's status does not name member a: %s %+v", b.Reason, b.Failed)
	}
	g.checkGroupRollback(t, "a", "b")
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		a, b, err := d.both()
		if err != nil {
			t.Fatal(err)
		}
		if !a.Position.IsStart() || !b.Position.IsStart() {
			t.Fatalf("after the group's rollback: a %s (%s), b %s (%s)", a.Position, a.Reason, b.Position, b.Reason)
		}
	}
}

// TestGroupRollbackRacesPush: while the group's rollback is being committed,
// a person pushes unrelated commits (README) to the same branch, again and
// again. Nothing is lost: every one of the person's commits and the
// group's rollback are on main, and every head seen along the way is an
// ancestor of the last (no push forced).
func TestGroupRollbackRacesPush(t *testing.T) {
	g := newGroupEnv(t, "2s", "2s")
	d := g.startGroup(t, "")
	d.wait(t, "a", 2*time.Minute, "a at rest at canary 60%", func(m daemon.Migration) bool { return m.Position == pos(60) && m.State != "Progressing" })
	d.wait(t, "b", 30*time.Second, "b at rest at canary 60%", func(m daemon.Migration) bool { return m.Position == pos(60) && m.State != "Progressing" })

	var (
		mu     sync.Mutex
		mine   []string // the person's commits
		heads  []string // every head seen
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		errs   []string
		rolled = make(chan struct{})
	)
	head := func() string {
		out, err := exec.Command("git", "-C", g.remote, "rev-parse", "main").Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	wg.Go(func() { // the heads, every 20ms
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if h := head(); h != "" {
				mu.Lock()
				if n := len(heads); n == 0 || heads[n-1] != h {
					heads = append(heads, h)
				}
				mu.Unlock()
			}
		}
	})
	personDone := make(chan struct{})
	wg.Go(func() { // the person
		defer close(personDone)
		work := filepath.Join(g.dir, "person")
		git := func(args ...string) (string, error) {
			cmd := exec.Command("git", append([]string{"-C", work}, args...)...)
			cmd.Env = append(os.Environ(), gittest.Env...)
			out, err := cmd.CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		if out, err := exec.Command("git", "clone", "-q", g.remote, work).CombinedOutput(); err != nil {
			mu.Lock()
			errs = append(errs, fmt.Sprintf("clone: %v %s", err, out))
			mu.Unlock()
			return
		}
		after := time.Time{}
		for n := 0; n < 400; n++ {
			select {
			case <-stop:
				return
			case <-rolled:
				if after.IsZero() {
					after = time.Now()
				}
			default:
			}
			if !after.IsZero() && time.Since(after) > 3*time.Second {
				return // a few more after the rollback landed
			}
			if _, err := git("pull", "-q", "--rebase", "origin", "main"); err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(work, "README.md"), fmt.Appendf(nil, "note %d\n", n), 0o644); err != nil {
				continue
			}
			if _, err := git("add", "README.md"); err != nil {
				continue
			}
			if _, err := git("commit", "-q", "-m", fmt.Sprintf("README: note %d", n)); err != nil {
				continue
			}
			pushed := false
			for try := 0; try < 20 && !pushed; try++ {
				if _, err := git("push", "-q", "origin", "HEAD:main"); err == nil {
					pushed = true
					break
				}
				_, _ = git("pull", "-q", "--rebase", "origin", "main")
			}
			if h, err := git("rev-parse", "HEAD"); err == nil && pushed {
				mu.Lock()
				mine = append(mine, h)
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	time.Sleep(time.Second) // the person is pushing
	g.set(t, g.svcs[0].candidate, map[string]string{"errorRate": "1"})
	d.wait(t, "a", time.Minute, "a rolled back", func(m daemon.Migration) bool { return m.Position.IsStart() })
	d.wait(t, "b", 10*time.Second, "b rolled back", func(m daemon.Migration) bool { return m.Position.IsStart() })
	waitFor(t, time.Minute, "the group's rollback committed among the person's pushes", func() bool { return len(g.groupCommits(t)) > 0 })
	close(rolled)
	select { // the person pushes for 3s more, and stops
	case <-personDone:
	case <-time.After(time.Minute):
		t.Error("the person's pushes did not end within 1m")
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatal(strings.Join(errs, "\n"))
	}
	final := head()
	t.Logf("the person pushed %d commits; %d heads seen; final %s", len(mine), len(heads), final[:12])
	if len(mine) < 5 {
		t.Errorf("the person pushed only %d commits", len(mine))
	}
	ancestor := func(c string) bool {
		return exec.Command("git", "-C", g.remote, "merge-base", "--is-ancestor", c, final).Run() == nil
	}
	for _, c := range mine {
		if !ancestor(c) {
			t.Errorf("the person's commit %s is not on main any more", c[:12])
		}
	}
	for _, h := range heads {
		if !ancestor(h) {
			t.Errorf("head %s seen on main is not an ancestor of the final head: a push was forced", h[:12])
		}
	}
	log := gittest.Git(t, g.remote, "log", "--format=%s", "main")
	if n := strings.Count(log, "README: note "); n < len(mine) {
		t.Errorf("%d README commits in the log, the person pushed %d", n, len(mine))
	}
	g.checkGroupRollback(t, "a", "b")
	if !strings.Contains(g.show(t, "README.md"), "note ") {
		t.Errorf("README.md at the head is not the person's")
	}
}
