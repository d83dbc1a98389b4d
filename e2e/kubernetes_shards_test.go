package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
	"github.com/hal9ai/hal9-migrate/internal/testenv"
	"github.com/hal9ai/hal9-migrate/leader"
	"github.com/hal9ai/hal9-migrate/plan"
	_ "github.com/hal9ai/hal9-migrate/store" // the pgx driver
)

// Sharding's timings in the test: a replica that stops renewing stops
// stepping after renew, its last step ends within step, and another takes
// its shards after lease (renew + step < lease).
const (
	shardCount = 8
	shardLease = 10 * time.Second
	shardRenew = 3 * time.Second
	shardRetry = 500 * time.Millisecond
	shardStep  = 5 * time.Second
)

// TestKubernetesShardedReplicas runs three daemons sharing ten plans
// through shard Leases on the test control plane and one PostgreSQL
// store, kills one with SIGKILL mid-migration, starts a fourth, kills
// another, and checks that every plan completes and that no plan was ever
// stepped by two replicas at once: every record a replica saved falls in
// a holding of the plan's shard by that replica, as the replicas' own
// logs tell them, holdings of one shard never overlap, and a killed
// replica's shards were taken only once their Leases could have expired.
func TestKubernetesShardedReplicas(t *testing.T) {
	cfg := k8stest.Env(t)
	dsn := shardsDatabase(t)
	kubeconfig := k8stest.Kubeconfig(t)
	leaseNS := k8stest.Namespace(t, cfg)
	health := promtest.StartApp(t, "v2")

	// Ten plans, each on its own Deployments by replica ratio; two of
	// them a lockstep group, which must land on one shard.
	const capacity = 10
	var names []string
	keys := map[string]string{} // each plan's shard key
	nsOf := map[string]string{} // each plan's namespace
	files := map[string]string{}
	for i := range 10 {
		name := fmt.Sprintf("shop-%d", i)
		group := ""
		if i >= 8 {
			group = "pair"
		}
		ns := k8stest.NameFor(t.Name() + "-" + name)
		k8stest.NamespaceNamed(t, cfg, ns)
		nsOf[name] = ns
		k8stest.NewApp(t, cfg, ns, k8stest.AppOptions{Replicas: capacity})
		files["plans/"+name+".yaml"] = shardedPlan(name, ns, group, health.URL)
		keys[name] = daemon.ShardKey(&plan.Plan{Metadata: plan.Metadata{Name: name}, Spec: plan.Spec{Group: group}})
		names = append(names, name)
	}
	e := &env{t: t, dir: t.TempDir()}
	e.startGit(t, files)

	start := func(name string) *daemonProc {
		return e.runShardedDaemon(t, name, fmt.Sprintf(`repo: %s
state: %s
dataDir: %s
listen: 127.0.0.1:%%d
poll: 1s
interval: 1s
statusInterval: 2s
timeouts: {step: %s}
kubernetes:
  kubeconfig: %s
  sharding: {enabled: true, shards: %d, namespace: %s, name: hal9, leaseDuration: %s, renewDeadline: %s, retryPeriod: %s}
log: {level: info, format: json}
`, e.repoURL, dsn, filepath.Join(e.dir, "data-"+name), shardStep, kubeconfig, shardCount, leaseNS, shardLease, shardRenew, shardRetry))
	}
	procs := map[string]*daemonProc{}
	kills := map[string]time.Time{}
	for _, n := range []string{"replica-a", "replica-b", "replica-c"} {
		procs[n] = start(n)
	}
	kill := func(name string) {
		t.Helper()
		p := procs[name]
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		kills[name] = time.Now()
		t.Logf("killed %s", name)
	}
	live := func() *daemonProc {
		for _, n := range slices.Sorted(maps.Keys(procs)) {
			if _, dead := kills[n]; !dead {
				return procs[n]
			}
		}
		return nil
	}
	// Mid-migration: some plan has moved, none has finished.
	waitFor(t, 3*time.Minute, "a plan past its first step", func() bool {
		for _, n := range names {
			if m, err := live().migration(n); err == nil && m.Position.Percentage >= 20 {
				return true
			}
		}
		return false
	})
	kill("replica-a")
	time.Sleep(2 * time.Second)
	procs["replica-d"] = start("replica-d")
	time.Sleep(shardLease)
	kill("replica-b")

	for _, n := range names {
		live().wait(t, n, 5*time.Minute, n+" completed at canary 60%", func(m daemon.Migration) bool {
			return m.Position == pos(60) && m.State == "Completed"
		})
	}
	// The status says which replica steps each plan: a live one, once
	// the killed replicas' Leases have expired.
	owners := map[string]string{}
	waitFor(t, 3*shardLease+30*time.Second, "every plan owned by a live replica", func() bool {
		for _, n := range names {
			m, err := live().migration(n)
			if err != nil {
				return false
			}
			owners[n] = m.Owner
			if m.Owner != "replica-c" && m.Owner != "replica-d" {
				return false
			}
		}
		return true
	})
	t.Logf("owners at the end: %v", owners)
	for _, n := range []string{"replica-c", "replica-d"} {
		procs[n].stop()
	}
	end := time.Now()

	logs := map[string][]logLine{}
	for n, p := range procs {
		logs[n] = readLogLines(t, p.logPath)
	}
	spans := checkShardHoldings(t, logs, kills, end, keys)
	checkEvents(t, k8stest.Client(t, cfg), nsOf, keys, spans)
}

// checkEvents checks the Events the driver left on each plan's
// Deployments, which name the replica that wrote them (ReportingInstance):
// each was written by a replica holding the plan's shard at the time,
// within the second an Event's time is rounded to.
func checkEvents(t *testing.T, kube kubernetes.Interface, nsOf, keys map[string]string, spans []holdingSpan) {
	t.Helper()
	n := 0
	for name, ns := range nsOf {
		evs, err := kube.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := leader.ShardOf(keys[name], shardCount)
		for _, ev := range evs.Items {
			if ev.ReportingController != "migrate.hal9.ai/hal9-migrate" {
				continue
			}
			n++
			at := ev.FirstTimestamp.Time
			held := false
			for _, h := range spans {
				if h.replica == ev.ReportingInstance && h.shard == s && h.from.Before(at.Add(time.Second)) && !h.to.Before(at) {
					held = true
				}
			}
			if !held {
				t.Errorf("%s: %s wrote the Event %q at %s without holding shard %d", name, ev.ReportingInstance, ev.Message, at.Format(time.TimeOnly), s)
			}
		}
	}
	if n == 0 {
		t.Error("the driver left no Events on the Deployments")
	}
	t.Logf("%d Events of the driver, each by a replica holding its plan's shard", n)
}

// shardedPlan is a plan walking canary 10 → 60% by replica ratio, soaking
// 2s at each step, guarded by the health endpoint at url.
func shardedPlan(name, ns, group, url string) string {
	g := ""
	if group != "" {
		g = "\n  group: " + group
	}
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: %s
spec:%s
  target: {phase: canary, percentage: 60}
  driver:
    kubernetes:
      namespace: %s
      stable: {deployment: %s}
      candidate: {deployment: %s}
  phases:
    - name: canary
      steps: [10, 20, 30, 40, 50, 60]
      soak: 3s
  guardrails:
    - name: health
      http: {url: '%s/health', timeout: 500ms}
      failures: 1
      for: 3s
  rollback:
    to: previous-step
    onNoData: hold
`, name, g, ns, k8stest.AppStable, k8stest.AppCandidate, url)
}

// runShardedDaemon starts a daemon replica named name with cfg, whose
// listen address holds a %d for its port; its log is its own file.
func (e *env) runShardedDaemon(t *testing.T, name, cfg string) *daemonProc {
	t.Helper()
	port := dockertest.FreePort(t)
	return e.launch(t, name, port, fmt.Sprintf(cfg, port), "POD_NAME="+name)
}

// shardsDatabase is a PostgreSQL database of the test's own on the server
// HAL9_TEST_POSTGRES_DSN names, dropped when the test ends.
func shardsDatabase(t *testing.T) string {
	t.Helper()
	server := os.Getenv("HAL9_TEST_POSTGRES_DSN")
	if server == "" {
		testenv.Missing(t, "HAL9_TEST_POSTGRES_DSN is not set: sharding needs the replicas' shared PostgreSQL store; start one with `export HAL9_TEST_POSTGRES_DSN=\"$(scripts/postgres.sh)\"`")
	}
	u, err := url.Parse(server)
	if err != nil || !strings.HasPrefix(server, "postgres") {
		t.Fatalf("HAL9_TEST_POSTGRES_DSN is not a postgres:// URL: %v", err)
	}
	admin, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	b := make([]byte, 6)
	rand.Read(b)
	name := "hal9_shards_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// logLine is one line of a replica's JSON log, the fields the check reads.
type logLine struct {
	Time    time.Time `json:"time"`
	Msg     string    `json:"msg"`
	Shard   *int      `json:"shard"`
	Plan    string    `json:"plan"`
	Action  string    `json:"action"`
	Replica string    `json:"replica"`
	Why     string    `json:"why"`
	Err     string    `json:"err"`
}

func readLogLines(t *testing.T, path string) []logLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []logLine
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var l logLine
		if json.Unmarshal(s.Bytes(), &l) == nil && !l.Time.IsZero() {
			out = append(out, l)
		}
	}
	return out
}

// holding is a replica's hold of a shard, from the log line that took it
// to the one that gave it up (or the replica's kill, or the test's end).
type holdingSpan struct {
	replica    string
	from, to   time.Time
	killed     bool
	shard      int
	openAtKill bool
}

// checkShardHoldings checks the replicas' logs: every saved step of a
// plan by a replica falls within a holding of the plan's shard by that
// replica; two holdings of one shard never overlap; and a shard a killed
// replica held was taken no sooner than its Lease could expire.
func checkShardHoldings(t *testing.T, logs map[string][]logLine, kills map[string]time.Time, end time.Time, keys map[string]string) []holdingSpan {
	t.Helper()
	var spans []holdingSpan
	saves := map[string]map[string]int{} // plan → replica → saves
	for replica, lines := range logs {
		open := map[int]time.Time{}
		for _, l := range lines {
			switch {
			case l.Msg == "shard acquired" && l.Shard != nil:
				if _, ok := open[*l.Shard]; ok {
					t.Errorf("%s took shard %d twice without giving it up", replica, *l.Shard)
				}
				open[*l.Shard] = l.Time
			case l.Msg == "shard lost; its work is stopped" && l.Shard != nil:
				// Safe (the work stopped before the Lease could expire),
				// but worth knowing when it happens on a loaded machine.
				t.Logf("%s lost shard %d at %s: %s", replica, *l.Shard, l.Time.Format("15:04:05.000"), l.Why)
			case strings.HasPrefix(l.Msg, "cannot "):
				t.Logf("%s at %s: %s: %s", replica, l.Time.Format("15:04:05.000"), l.Msg, l.Err)
			case l.Msg == "shard released" && l.Shard != nil:
				from, ok := open[*l.Shard]
				if !ok {
					t.Errorf("%s gave up shard %d it had not taken", replica, *l.Shard)
					continue
				}
				spans = append(spans, holdingSpan{replica: replica, from: from, to: l.Time, shard: *l.Shard})
				delete(open, *l.Shard)
			}
		}
		for s, from := range open {
			h := holdingSpan{replica: replica, from: from, to: end, shard: s}
			if k, ok := kills[replica]; ok {
				h.to, h.killed = k, true
			}
			spans = append(spans, h)
		}
	}
	// Holdings of one shard never overlap; a killed replica's is followed
	// only once its Lease could have expired: its last renewal was at
	// most renewDeadline before the kill, or it would have stopped.
	for s := range shardCount {
		var of []holdingSpan
		for _, h := range spans {
			if h.shard == s {
				of = append(of, h)
			}
		}
		slices.SortFunc(of, func(a, b holdingSpan) int { return a.from.Compare(b.from) })
		for i := 1; i < len(of); i++ {
			prev, next := of[i-1], of[i]
			if next.from.Before(prev.to) {
				t.Errorf("shard %d: %s took it at %s while %s held it until %s", s, next.replica, next.from.Format(time.StampMilli), prev.replica, prev.to.Format(time.StampMilli))
			}
			if prev.killed && next.from.Sub(prev.to) < shardLease-shardRenew {
				t.Errorf("shard %d: %s took it %s after %s was killed holding it, before its Lease could expire", s, next.replica, next.from.Sub(prev.to), prev.replica)
			}
		}
		t.Logf("shard %d: %s", s, describeSpans(of))
	}
	// Every saved step in a holding of its shard by the replica that
	// saved it.
	for replica, lines := range logs {
		for _, l := range lines {
			if l.Plan == "" || l.Action == "" {
				continue
			}
			if l.Replica != replica {
				t.Errorf("a line of %s's log says replica %q", replica, l.Replica)
			}
			if saves[l.Plan] == nil {
				saves[l.Plan] = map[string]int{}
			}
			saves[l.Plan][replica]++
			key, ok := keys[l.Plan]
			if !ok {
				t.Errorf("%s saved a step of %s, a plan the test does not have", replica, l.Plan)
				continue
			}
			s := leader.ShardOf(key, shardCount)
			in := false
			for _, h := range spans {
				if h.replica == replica && h.shard == s && !l.Time.Before(h.from) && !l.Time.After(h.to) {
					in = true
				}
			}
			if !in {
				t.Errorf("%s saved %s of %s at %s without holding its shard %d", replica, l.Action, l.Plan, l.Time.Format(time.StampMilli), s)
			}
		}
	}
	moved := 0
	for _, n := range slices.Sorted(maps.Keys(keys)) {
		if len(saves[n]) == 0 {
			t.Errorf("%s: no replica logged a saved step", n)
		}
		if len(saves[n]) > 1 {
			moved++
		}
		t.Logf("%s: saved steps by replica %v", n, saves[n])
	}
	if moved == 0 {
		t.Errorf("no plan changed replicas: the kills took over nothing")
	}
	return spans
}

func describeSpans(hs []holdingSpan) string {
	var parts []string
	for _, h := range hs {
		end := h.to.Format("15:04:05.000")
		if h.killed {
			end += " (killed)"
		}
		parts = append(parts, fmt.Sprintf("%s %s–%s", h.replica, h.from.Format("15:04:05.000"), end))
	}
	return strings.Join(parts, ", ")
}
