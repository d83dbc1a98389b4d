package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// On the Kubernetes driver no request flows: the test control plane's
// nodes and pods are kwok's fakes, and no Gateway implementation reads the
// HTTPRoute. The scenarios assert what the daemon writes instead, the
// route's backend weights and the Deployments' replicas, and drive their
// faults through something real the daemon measures: an HTTP health
// guardrail on a testapp process on 127.0.0.1 standing for the candidate's
// health endpoint, whose health the test flips at run time.

// k8sEnv is the world a daemon with the kubernetes driver runs in: the plan
// repository behind a proxy (the env's git side; it has no containers and
// no nginx), a namespace of its own on the test control plane holding
// k8stest.NewApp's Deployments, Services and (routed) HTTPRoute, and the
// health endpoint the plan's guardrail checks.
type k8sEnv struct {
	env
	kubeconfig string
	kube       kubernetes.Interface
	gw         gatewayclient.Interface
	ns         string
	routed     bool
	capacity   int // stable's replicas at the start: the split's total
	health     *promtest.App
	// daemonExtra is appended to the daemon's configuration (a
	// prometheus: section, say).
	daemonExtra string
	// interval is the daemon's --interval (1s by default).
	interval string
}

// k8sPlan is a plan with canary steps 10, 30, 60 soaking soak each, its
// target at target%, a health guardrail over `for`, previous-step
// rollbacks, on the env's Deployments, split by the route or by replicas.
type k8sPlan struct {
	target   int
	soak     string // 2s by default
	forWin   string // 3s by default
	features string // a line under spec.features, if any
	// guardrail replaces the health guardrail: the lines of one list
	// item under spec.guardrails, indented as there.
	guardrail string
	onNoData  string // hold by default
	// limits are both Deployments' container limits (none if empty).
	limits corev1.ResourceList
}

func (w k8sPlan) yaml(e *k8sEnv) string {
	if w.soak == "" {
		w.soak = "2s"
	}
	if w.forWin == "" {
		w.forWin = "3s"
	}
	traffic := ""
	if e.routed {
		traffic = "\n      traffic: {httpRoute: " + k8stest.AppRoute + "}"
	}
	features := ""
	if w.features != "" {
		features = "  features:\n    " + w.features + "\n"
	}
	if w.guardrail == "" {
		w.guardrail = fmt.Sprintf(`    - name: health
      http: {url: '%s/health', timeout: 500ms}
      failures: 1
      for: %s
`, e.health.URL, w.forWin)
	}
	if w.onNoData == "" {
		w.onNoData = "hold"
	}
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target: {phase: canary, percentage: %d}
  driver:
    kubernetes:
      namespace: %s
      stable: {deployment: %s}
      candidate: {deployment: %s}%s
  phases:
    - name: canary
      steps: [10, 30, 60]
      soak: %s
  guardrails:
%s  rollback:
    to: previous-step
    onNoData: %s
%s`, w.target, e.ns, k8stest.AppStable, k8stest.AppCandidate, traffic, w.soak, w.guardrail, w.onNoData, features)
}

// newK8sEnv makes the namespace and its workloads (stable with capacity
// replicas, the candidate with none), starts the health endpoint, and
// the plan repository holding w. It fails, or skips outside CI, when
// there is no control plane (k8stest.Env).
func newK8sEnv(t *testing.T, routed bool, capacity int, w k8sPlan) *k8sEnv {
	t.Helper()
	cfg := k8stest.Env(t)
	e := &k8sEnv{env: env{t: t, dir: t.TempDir()}, kubeconfig: k8stest.Kubeconfig(t), routed: routed, capacity: capacity}
	e.kube = k8stest.Client(t, cfg)
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.gw = gw
	e.ns = k8stest.Namespace(t, cfg)
	k8stest.NewApp(t, cfg, e.ns, k8stest.AppOptions{Replicas: int32(capacity), Routed: routed, Limits: w.limits})
	e.health = promtest.StartApp(t, "v2")
	e.startGit(t, map[string]string{"plans/shop.yaml": w.yaml(e)})
	return e
}

// startDaemon starts `hal9-migrate daemon` with the kubernetes driver on
// the test control plane, confined to the env's namespace.
func (e *k8sEnv) startDaemon(t *testing.T) *daemonProc {
	t.Helper()
	port := dockertest.FreePort(t)
	interval := e.interval
	if interval == "" {
		interval = "1s"
	}
	cfg := fmt.Sprintf(`repo: %s
dataDir: %s
listen: 127.0.0.1:%d
poll: 1s
interval: %s
statusInterval: 5s
kubernetes:
  kubeconfig: %s
  namespaces: [%s]
log: {level: debug}
%s`, e.repoURL, filepath.Join(e.dir, "data"), port, interval, e.kubeconfig, e.ns, e.daemonExtra)
	return e.runDaemon(t, port, cfg)
}

// startAt starts the daemon and waits until the migration rests at its
// target, canary target%, with the workloads showing it.
func (e *k8sEnv) startAt(t *testing.T, target int) *daemonProc {
	t.Helper()
	d := e.startDaemon(t)
	d.wait(t, "shop", 2*time.Minute, fmt.Sprintf("at rest at canary %d%%", target), func(m daemon.Migration) bool {
		return m.Position == pos(target) && (m.State == "Holding" || m.State == "Completed")
	})
	e.settled(t, d, target, 30*time.Second)
	return d
}

// fault makes the health endpoint fail (true) or pass (false).
func (e *k8sEnv) fault(t *testing.T, on bool) {
	t.Helper()
	e.health.Set(t, map[string]string{"unhealthy": fmt.Sprint(on)})
}

// world is what the daemon shows and what the control plane holds, read
// together: the position, the candidate's share by the route's weights
// (-1 without a route), and the Deployments' replicas.
type world struct {
	pos                         plan.Position
	traffic, mirror             int
	stable, candidate           int // spec.replicas
	stableReady, candidateReady int
	// consistent: the route did not change while the Deployments were
	// read, so its weights and their replicas are of one instant.
	consistent bool
}

func (w world) String() string {
	route := "no route"
	if w.traffic >= 0 {
		route = fmt.Sprintf("route %d%% mirror %d%%", w.traffic, w.mirror)
	}
	return fmt.Sprintf("%s: %s, stable %d (%d ready), candidate %d (%d ready)", w.pos, route, w.stable, w.stableReady, w.candidate, w.candidateReady)
}

// objects is the live part of a world, without the position.
type objects struct {
	traffic, mirror   int
	stable, candidate int
}

func (w world) objects() objects {
	return objects{traffic: w.traffic, mirror: w.mirror, stable: w.stable, candidate: w.candidate}
}

func (w world) ready() bool { return w.stableReady == w.stable && w.candidateReady == w.candidate }

// expect is what the workloads show once the driver has applied canary
// pct%: with a route, the weights give the candidate pct%, stable keeps
// the whole capacity and the candidate gets its share of it rounded up;
// by replica ratio, the two share the capacity (README, "On Kubernetes").
func (e *k8sEnv) expect(pct int) objects {
	if e.routed {
		return objects{traffic: pct, stable: e.capacity, candidate: (e.capacity*pct + 99) / 100}
	}
	c := (e.capacity*pct + 50) / 100
	return objects{traffic: -1, stable: e.capacity - c, candidate: c}
}

// read reads the control plane: the route (twice, around the
// Deployments, to know whether they are of one instant) and the
// Deployments.
func (e *k8sEnv) read(ctx context.Context) (world, error) {
	w := world{traffic: -1}
	var before *gatewayv1.HTTPRoute
	if e.routed {
		r, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, k8stest.AppRoute, metav1.GetOptions{})
		if err != nil {
			return w, err
		}
		before = r
		w.traffic, w.mirror = routeShare(r)
	}
	for _, x := range []struct {
		name        string
		spec, ready *int
	}{{k8stest.AppStable, &w.stable, &w.stableReady}, {k8stest.AppCandidate, &w.candidate, &w.candidateReady}} {
		dep, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, x.name, metav1.GetOptions{})
		if err != nil {
			return w, err
		}
		*x.spec = 1
		if dep.Spec.Replicas != nil {
			*x.spec = int(*dep.Spec.Replicas)
		}
		*x.ready = int(dep.Status.ReadyReplicas)
	}
	w.consistent = true
	if e.routed {
		r, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, k8stest.AppRoute, metav1.GetOptions{})
		if err != nil {
			return w, err
		}
		w.consistent = r.ResourceVersion == before.ResourceVersion
	}
	return w, nil
}

// routeShare reads the route as a person would: the candidate's weight out
// of both sides' in its one rule (a backend without a weight weighs 1, as
// the Gateway API says), and the percent of a mirror to the candidate.
func routeShare(r *gatewayv1.HTTPRoute) (traffic, mirror int) {
	var sw, cw int
	for _, b := range r.Spec.Rules[0].BackendRefs {
		weight := 1
		if b.Weight != nil {
			weight = int(*b.Weight)
		}
		switch string(b.Name) {
		case k8stest.AppStable:
			sw += weight
		case k8stest.AppCandidate:
			cw += weight
		}
	}
	if sw+cw > 0 {
		traffic = 100 * cw / (sw + cw)
	}
	for _, f := range r.Spec.Rules[0].Filters {
		if f.RequestMirror != nil && string(f.RequestMirror.BackendRef.Name) == k8stest.AppCandidate {
			mirror = 100
			if f.RequestMirror.Percent != nil {
				mirror = int(*f.RequestMirror.Percent)
			}
		}
	}
	return traffic, mirror
}

// settled waits until the migration is at canary pct% (start for 0) and
// the workloads show it, every replica ready.
func (e *k8sEnv) settled(t *testing.T, d *daemonProc, pct int, timeout time.Duration) world {
	t.Helper()
	want := e.expect(pct)
	var last world
	var err error
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		last, err = e.read(t.Context())
		if m, merr := d.migration("shop"); merr == nil {
			last.pos = m.Position
		}
		if err == nil && last.pos == posOrStart(pct) && last.objects() == want && last.ready() {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workloads at canary %d%%: not within %s: want %+v, last %s (err %v)", pct, timeout, want, last, err)
		}
	}
}

// k8sSampler records, every 50ms, the position the daemon shows and the
// workloads on the control plane, a sample each time either changes.
type k8sSampler struct {
	mu      sync.Mutex
	samples []k8sSample
	// overload are the reads where the route sent the candidate a share
	// its ready replicas could not carry.
	overload []string
	rounds   atomic.Int64 // samplings done
	stop     context.CancelFunc
	done     chan struct{}
}

type k8sSample struct {
	at time.Time
	world
}

// sample starts sampling the daemon d returns (the one running now). While
// no daemon answers, the workloads are still sampled, under the last
// position seen: nothing should move them then.
func (e *k8sEnv) sample(t *testing.T, d func() *daemonProc) *k8sSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &k8sSampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var last world // the last sample recorded
		var at plan.Position
		known := false
		for ctx.Err() == nil {
			m, err := d().migration("shop")
			if err == nil {
				at, known = m.Position, true
			}
			if w, err := e.read(ctx); err == nil && known {
				w.pos = at
				s.mu.Lock()
				if need := (e.capacity*w.traffic + 99) / 100; e.routed && w.consistent && w.candidateReady < need {
					s.overload = append(s.overload, fmt.Sprintf("the route sent the candidate %d%% with %d ready replicas of the %d it needs: %s",
						w.traffic, w.candidateReady, need, w))
				}
				if n := len(s.samples); n == 0 || w.pos != last.pos || w.objects() != last.objects() ||
					w.stableReady != last.stableReady || w.candidateReady != last.candidateReady {
					s.samples = append(s.samples, k8sSample{at: time.Now(), world: w})
					last = w
				}
				s.mu.Unlock()
			}
			s.rounds.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

// daemonOf returns a function giving d, for a sampler of one daemon.
func daemonOf(d *daemonProc) func() *daemonProc { return func() *daemonProc { return d } }

// end stops the sampler once it has sampled the world as it is now: a
// whole round started after the call (within 10s).
func (s *k8sSampler) end() {
	select {
	case <-s.done:
		return
	default:
	}
	n := s.rounds.Load()
	for deadline := time.Now().Add(10 * time.Second); s.rounds.Load() < n+2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	<-s.done
}

func (s *k8sSampler) all() []k8sSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// stay is a stretch of samples at one position.
type stay struct {
	pos     plan.Position
	from    time.Time // the first sample there
	samples []k8sSample
}

// stays splits the samples by position.
func stays(samples []k8sSample) []stay {
	var out []stay
	for _, x := range samples {
		if n := len(out); n == 0 || out[n-1].pos != x.pos {
			out = append(out, stay{pos: x.pos, from: x.at})
		}
		out[len(out)-1].samples = append(out[len(out)-1].samples, x)
	}
	return out
}

// distinct returns the values f takes over the samples, each once per run.
func distinct(samples []k8sSample, f func(world) int) []int {
	var out []int
	for _, x := range samples {
		if v := f(x.world); len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

// checkWalk checks the samples against the walk through the canary
// percentages pcts (0 is start): the daemon showed those positions in that
// order, each once; at each the workloads showed that step's split, every
// replica ready; the route's weights and the candidate's replicas (and
// stable's, by replica ratio) went through the steps' values in that
// order and nothing else; and the route never sent the candidate a share
// its ready replicas could not carry.
func (e *k8sEnv) checkWalk(t *testing.T, s *k8sSampler, pcts ...int) {
	t.Helper()
	samples := s.all()
	var path []string
	for _, st := range stays(samples) {
		path = append(path, st.pos.String())
	}
	t.Logf("positions: %s (%d samples in %d rounds)", strings.Join(path, " → "), len(samples), s.rounds.Load())
	var want []plan.Position
	for _, p := range pcts {
		want = append(want, posOrStart(p))
	}
	got := stays(samples)
	if len(got) != len(want) {
		t.Fatalf("walked %v, want %v", path, want)
	}
	for i, st := range got {
		if st.pos != want[i] {
			t.Fatalf("walked %v, want %v", path, want)
		}
		exp := e.expect(pcts[i])
		if !slices.ContainsFunc(st.samples, func(x k8sSample) bool { return x.objects() == exp && x.ready() }) {
			var seen []string
			for _, x := range st.samples {
				seen = append(seen, x.String())
			}
			t.Errorf("at %s the workloads never showed %+v with every replica ready:\n%s", st.pos, exp, strings.Join(seen, "\n"))
		}
	}
	// The split moved once per step, through the steps' values only.
	var wantTraffic, wantCand, wantStable []int
	for _, p := range pcts {
		x := e.expect(p)
		for _, f := range []struct {
			list *[]int
			v    int
		}{{&wantTraffic, x.traffic}, {&wantCand, x.candidate}, {&wantStable, x.stable}} {
			if n := len(*f.list); n == 0 || (*f.list)[n-1] != f.v {
				*f.list = append(*f.list, f.v)
			}
		}
	}
	for _, c := range []struct {
		what string
		want []int
		f    func(world) int
	}{
		{"the route's share for the candidate", wantTraffic, func(w world) int { return w.traffic }},
		{"the candidate's replicas", wantCand, func(w world) int { return w.candidate }},
		{"stable's replicas", wantStable, func(w world) int { return w.stable }},
		{"the route's mirror", []int{0}, func(w world) int { return max(w.mirror, 0) }},
	} {
		got := distinct(samples, c.f)
		t.Logf("%s: %v", c.what, got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s went %v, want %v", c.what, got, c.want)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.overload {
		t.Error(o)
	}
}

// posOrStart is canary pct%, or start for 0.
func posOrStart(pct int) plan.Position {
	if pct == 0 {
		return plan.Start
	}
	return pos(pct)
}

// checkWalkedDown checks a persistent fault's walk from canary 60% down to
// start: each step held at least its `for` (3s) before the next rollback,
// the rollbacks committed, and the plan file and the status file at start.
func (e *k8sEnv) checkWalkedDown(t *testing.T, samples []k8sSample) {
	t.Helper()
	st := stays(samples)
	for i := 1; i < len(st)-1; i++ {
		held := st[i+1].from.Sub(st[i].from)
		t.Logf("at %s for %s", st[i].pos, held.Round(10*time.Millisecond))
		if held < 3*time.Second {
			t.Errorf("rolled back from %s after %s, before its `for` (3s) had passed there", st[i].pos, held)
		}
	}
	e.checkRolledBackInGit(t, "canary 60% → ", "→ start")
	waitFor(t, 30*time.Second, "the plan file names start", func() bool {
		return strings.Contains(e.show(t, "plans/shop.yaml"), "target: {phase: canary, percentage: 0}")
	})
	waitFor(t, 30*time.Second, "the status file says RolledBack at start", func() bool {
		st := e.show(t, "status/shop.yaml")
		return strings.Contains(st, "phase: start") && strings.Contains(st, "state: RolledBack")
	})
}
