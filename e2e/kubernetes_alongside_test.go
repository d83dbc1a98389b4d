package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/drivers/kubernetes"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// The Kubernetes driver beside the things that usually share a plan's
// objects with it, through the assembled daemon: HorizontalPodAutoscalers
// on both Deployments (drivers/kubernetes/autoscaler.go), and a GitOps
// tool applying the Deployments and the route as its repository has them
// (docs/gitops-tools.md).

// hpaBounds are an autoscaler's minReplicas and maxReplicas.
type hpaBounds struct{ min, max int }

func (b hpaBounds) String() string { return fmt.Sprintf("%d..%d", b.min, b.max) }

// shareOf is b for n replicas of total, as autoscaler.go computes it:
// each bound times n/total rounded up, at least 1, the maximum at least
// the minimum; b itself for n >= total.
func (b hpaBounds) shareOf(n, total int) hpaBounds {
	if total <= 0 || n >= total {
		return b
	}
	lo := max(1, (b.min*n+total-1)/total)
	return hpaBounds{min: lo, max: max(lo, (b.max*n+total-1)/total)}
}

// createHPA creates an autoscaling/v2 autoscaler of Deployment name with
// bounds b and a CPU utilization target. The pods request no CPU, so the
// autoscaler controller makes no decision from metrics: it only keeps the
// replicas within the bounds.
func (e *k8sEnv) createHPA(t *testing.T, name string, b hpaBounds) {
	t.Helper()
	lo, util := int32(b.min), int32(80)
	_, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers(e.ns).Create(t.Context(), &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			MinReplicas:    &lo, MaxReplicas: int32(b.max),
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: "cpu", Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: &util},
			}}},
		},
	}, metav1.CreateOptions{FieldManager: "test"})
	if err != nil {
		t.Fatal(err)
	}
}

// hpaWorld is what the autoscaled test reads: the position, the route's
// share, both autoscalers' bounds and the candidate's mark of its bounds
// from before, and the Deployments' replicas.
type hpaWorld struct {
	pos                         plan.Position
	traffic                     int
	stableHPA, candHPA          hpaBounds
	candMark                    string // the candidate autoscaler's kubernetes.AnnotationBounds
	stableMark                  string
	stable, candidate           int
	stableReady, candidateReady int
}

func (w hpaWorld) String() string {
	return fmt.Sprintf("%s: route %d%%, stable %d (%d ready) hpa %s %q, candidate %d (%d ready) hpa %s %q",
		w.pos, w.traffic, w.stable, w.stableReady, w.stableHPA, w.stableMark, w.candidate, w.candidateReady, w.candHPA, w.candMark)
}

// ownedReplicas lists the managedFields entries of the daemon's field
// manager on a Deployment that own spec.replicas, as "operation/subresource".
func ownedReplicas(x *appsv1.Deployment) []string {
	var out []string
	for _, m := range x.ManagedFields {
		if m.Manager != kubernetes.FieldManager || m.FieldsV1 == nil {
			continue
		}
		var f struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if json.Unmarshal(m.FieldsV1.Raw, &f) == nil {
			if _, ok := f.Spec["f:replicas"]; ok {
				out = append(out, string(m.Operation)+"/"+m.Subresource)
			}
		}
	}
	return out
}

// readHPA reads the route, the autoscalers and the Deployments, and
// returns the daemon's managedFields entries owning spec.replicas.
func (e *k8sEnv) readHPA(ctx context.Context) (hpaWorld, map[string][]string, error) {
	var w hpaWorld
	r, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, k8stest.AppRoute, metav1.GetOptions{})
	if err != nil {
		return w, nil, err
	}
	w.traffic, _ = routeShare(r)
	for _, x := range []struct {
		name string
		b    *hpaBounds
		mark *string
	}{{k8stest.AppStable, &w.stableHPA, &w.stableMark}, {k8stest.AppCandidate, &w.candHPA, &w.candMark}} {
		h, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers(e.ns).Get(ctx, x.name, metav1.GetOptions{})
		if err != nil {
			return w, nil, err
		}
		x.b.min, x.b.max = 1, int(h.Spec.MaxReplicas)
		if h.Spec.MinReplicas != nil {
			x.b.min = int(*h.Spec.MinReplicas)
		}
		*x.mark = h.Annotations[kubernetes.AnnotationBounds]
	}
	owned := map[string][]string{}
	for _, x := range []struct {
		name        string
		spec, ready *int
	}{{k8stest.AppStable, &w.stable, &w.stableReady}, {k8stest.AppCandidate, &w.candidate, &w.candidateReady}} {
		dep, err := e.kube.AppsV1().Deployments(e.ns).Get(ctx, x.name, metav1.GetOptions{})
		if err != nil {
			return w, nil, err
		}
		*x.spec = 1
		if dep.Spec.Replicas != nil {
			*x.spec = int(*dep.Spec.Replicas)
		}
		*x.ready = int(dep.Status.ReadyReplicas)
		if o := ownedReplicas(dep); len(o) > 0 {
			owned[x.name] = o
		}
	}
	return w, owned, nil
}

// TestKubernetesAutoscaledMigration walks a routed plan whose two
// Deployments each have a HorizontalPodAutoscaler (stable 2..8 over 4
// replicas, the candidate 1..5) through canary 10, 30, 60%, and a fault
// walks it back down to start. At each step the candidate's autoscaler has
// its share of stable's bounds from before (the candidate's own, marked
// in its annotation), stable's keeps its own, the candidate's replicas
// stay within its autoscaler's bounds; at start the candidate's autoscaler
// has its own bounds back, unmarked, and the candidate no replicas. The
// daemon never applies spec.replicas of either Deployment: the only
// writes of it it may own are the scale subresource's, to and from zero
// (autoscaler.go).
func TestKubernetesAutoscaledMigration(t *testing.T) {
	t.Parallel()
	const capacity = 4
	stableB, candB := hpaBounds{2, 8}, hpaBounds{1, 5}
	e := newK8sEnv(t, true, capacity, k8sPlan{target: 60, forWin: "3s"})
	e.createHPA(t, k8stest.AppStable, stableB)
	e.createHPA(t, k8stest.AppCandidate, candB)

	// want is the autoscalers at canary pct% (start for 0).
	type want struct {
		cand hpaBounds
		mark string
	}
	wantAt := func(pct int) want {
		if pct == 0 {
			return want{cand: candB}
		}
		n := (capacity*pct + 99) / 100
		return want{cand: stableB.shareOf(n, capacity), mark: fmt.Sprintf("%d,%d", candB.min, candB.max)}
	}
	ok := func(w hpaWorld, pct int) bool {
		x := wantAt(pct)
		cOK := w.candidate >= x.cand.min && w.candidate <= x.cand.max
		if pct == 0 {
			cOK = w.candidate == 0
		}
		return w.pos == posOrStart(pct) && w.traffic == pct && w.stable == capacity && w.stableReady == capacity &&
			w.stableHPA == stableB && w.stableMark == "" && w.candHPA == x.cand && w.candMark == x.mark &&
			cOK && w.candidateReady == w.candidate
	}

	d := e.startDaemon(t)

	// Sample until the end: every change of the world, and every owner of
	// spec.replicas the daemon ever had.
	var (
		mu      sync.Mutex
		samples []hpaWorld
		owners  = map[string]bool{}
	)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			m, merr := d.migration("shop")
			w, owned, err := e.readHPA(ctx)
			if merr == nil && err == nil {
				w.pos = m.Position
				mu.Lock()
				if n := len(samples); n == 0 || samples[n-1] != w {
					samples = append(samples, w)
				}
				for name, o := range owned {
					for _, x := range o {
						owners[name+" "+x] = true
					}
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	stopSampling := func() {
		cancel()
		<-done
	}
	defer stopSampling()

	settle := func(pct int) hpaWorld {
		t.Helper()
		var last hpaWorld
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			mu.Lock()
			if n := len(samples); n > 0 {
				last = samples[n-1]
			}
			mu.Unlock()
			if ok(last, pct) {
				t.Logf("settled at %s", last)
				return last
			}
		}
		t.Fatalf("not settled at canary %d%% (autoscalers %+v): last %s", pct, wantAt(pct), last)
		return last
	}

	d.wait(t, "shop", 3*time.Minute, "at rest at canary 60%", func(m daemon.Migration) bool {
		return m.Position == pos(60) && (m.State == "Holding" || m.State == "Completed")
	})
	settle(60)
	e.fault(t, true)
	d.wait(t, "shop", 2*time.Minute, "rolled back to start", func(m daemon.Migration) bool { return m.Position.IsStart() })
	settle(0)
	time.Sleep(2 * time.Second) // the world at start, a while
	stopSampling()

	// Each position the daemon showed had, at some instant, its
	// autoscalers and workloads; no sample anywhere had bounds of another
	// step, and stable's autoscaler was never touched.
	var path []string
	var at []plan.Position
	for _, w := range samples {
		if len(at) == 0 || at[len(at)-1] != w.pos {
			at = append(at, w.pos)
			path = append(path, w.pos.String())
		}
	}
	t.Logf("positions: %s (%d samples)", strings.Join(path, " → "), len(samples))
	pcts := []int{10, 30, 60, 30, 10, 0}
	wantPath := []plan.Position{plan.Start}
	for _, p := range pcts {
		wantPath = append(wantPath, posOrStart(p))
	}
	if !slices.Equal(at, wantPath) && !slices.Equal(at, wantPath[1:]) {
		t.Errorf("walked %v, want %v", path, wantPath)
	}
	var bySeen []string
	for i, w := range samples {
		if w.stableHPA != stableB || w.stableMark != "" {
			t.Errorf("sample %d: stable's autoscaler changed: %s", i, w)
		}
		known := w.candHPA == candB
		for _, q := range []int{10, 30, 60} {
			known = known || w.candHPA == wantAt(q).cand
		}
		if !known {
			t.Errorf("sample %d: the candidate's autoscaler at %s, the bounds of no step: %s", i, w.candHPA, w)
		}
		if w.candidate > w.candHPA.max {
			t.Errorf("sample %d: the candidate above its autoscaler's maximum: %s", i, w)
		}
		if s := fmt.Sprintf("%s %s %q", w.pos, w.candHPA, w.candMark); len(bySeen) == 0 || bySeen[len(bySeen)-1] != s {
			bySeen = append(bySeen, s)
		}
	}
	t.Logf("the candidate's autoscaler by position: %s", strings.Join(bySeen, " | "))
	for i, p := range pcts {
		if !slices.ContainsFunc(samples, func(w hpaWorld) bool { return ok(w, p) }) {
			t.Errorf("step %d (canary %d%%): never showed autoscalers %+v with the workloads", i, p, wantAt(p))
		}
	}
	var names []string
	for o := range owners {
		names = append(names, o)
		if !strings.HasSuffix(o, "Update/scale") {
			t.Errorf("the daemon (%s) owned spec.replicas of deployment %s, which an autoscaler targets", kubernetes.FieldManager, o)
		}
	}
	slices.Sort(names)
	t.Logf("the daemon's ownerships of spec.replicas seen: %v (the scale subresource's only is allowed)", names)
	e.checkRolledBackInGit(t, "canary 60% → ", "→ start")
}

// toolRoute is k8stest.NewApp's HTTPRoute as the tool applies it: its
// parents, hostnames and a label, no rules.
func toolRoute(ns string) []byte {
	b, err := json.Marshal(map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "HTTPRoute",
		"metadata":   map[string]any{"name": k8stest.AppRoute, "namespace": ns, "labels": map[string]string{"team": "shop"}},
		"spec": map[string]any{
			// As the API server stored k8stest's: parentRefs is an atomic
			// list, so the defaulted group and kind are part of its value.
			"parentRefs": []any{map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway"}},
			"hostnames":  []any{"app.example.com"},
		},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// TestKubernetesGitOpsToolAlongside: while the daemon walks a routed plan
// to canary 60%, a GitOps tool applies (server-side, unforced) the
// Deployments without replicas and the route without rules every second,
// each with a label of its own. No apply conflicts, the route's share for
// the candidate only ever grows, through the steps' values, the migration
// reaches its target with the daemon's weights and replicas and keeps
// them through the tool's further syncs, and the tool's labels stay.
func TestKubernetesGitOpsToolAlongside(t *testing.T) {
	t.Parallel()
	const capacity = 4
	e := newK8sEnv(t, true, capacity, k8sPlan{target: 60})
	deps := e.kube.AppsV1().Deployments(e.ns)
	routes := e.gw.GatewayV1().HTTPRoutes(e.ns)

	var (
		mu       sync.Mutex
		syncs    int
		failures []string
	)
	sync1 := func(ctx context.Context) {
		var errs []string
		for _, dep := range []*appsv1ac.DeploymentApplyConfiguration{
			k8stest.GitOpsDeployment(e.ns, k8stest.AppStable, "v1"), k8stest.GitOpsDeployment(e.ns, k8stest.AppCandidate, "v2"),
		} {
			if _, err := deps.Apply(ctx, dep, metav1.ApplyOptions{FieldManager: k8stest.GitOpsManager}); err != nil && ctx.Err() == nil {
				errs = append(errs, fmt.Sprintf("deployment %s: %v", *dep.Name, err))
			}
		}
		if _, err := routes.Patch(ctx, k8stest.AppRoute, types.ApplyPatchType, toolRoute(e.ns),
			metav1.PatchOptions{FieldManager: k8stest.GitOpsManager}); err != nil && ctx.Err() == nil {
			errs = append(errs, fmt.Sprintf("route: %v", err))
		}
		mu.Lock()
		syncs++
		failures = append(failures, errs...)
		mu.Unlock()
	}
	// The tool's first sync, before the daemon, adopts the objects.
	sync1(t.Context())

	const maxSyncs = 90
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < maxSyncs && ctx.Err() == nil; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			sync1(ctx)
		}
	}()
	stopTool := func() {
		cancel()
		<-done
	}
	defer stopTool()

	d := e.startDaemon(t)
	// all samples the route from the start, for the monotonic share; s
	// from canary 10%, for the walk: at start the driver scales the
	// candidate up before it moves the route.
	all := e.sample(t, daemonOf(d))
	d.wait(t, "shop", time.Minute, "entered canary 10%", func(m daemon.Migration) bool { return m.Position == pos(10) })
	s := e.sample(t, daemonOf(d))
	d.wait(t, "shop", 2*time.Minute, "at rest at canary 60%", func(m daemon.Migration) bool {
		return m.Position == pos(60) && (m.State == "Holding" || m.State == "Completed")
	})
	e.settled(t, d, 60, 30*time.Second)
	mu.Lock()
	atTarget := syncs
	mu.Unlock()
	// Five more of the tool's syncs at rest.
	waitFor(t, 30*time.Second, "five syncs at the target", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return syncs >= atTarget+5
	})
	stopTool()
	final := e.settled(t, d, 60, 10*time.Second)
	s.end()
	all.end()

	mu.Lock()
	t.Logf("the tool synced %d times (%d by the target), %d failures", syncs, atTarget, len(failures))
	for _, f := range failures {
		t.Errorf("the tool's apply failed: %s", f)
	}
	mu.Unlock()
	if atTarget < 3 {
		t.Errorf("only %d syncs before the migration reached its target: the tool did not run alongside", atTarget)
	}

	e.checkWalk(t, s, 10, 30, 60)
	traffic := distinct(all.all(), func(w world) int { return w.traffic })
	for i := 1; i < len(traffic); i++ {
		if traffic[i] < traffic[i-1] {
			t.Errorf("the route's share went back: %v", traffic)
		}
	}
	t.Logf("the route's share for the candidate: %v; at the end %s", traffic, final)

	for _, name := range []string{k8stest.AppStable, k8stest.AppCandidate} {
		x, err := deps.Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if x.Labels["team"] != "shop" {
			t.Errorf("deployment %s lost the tool's label: %v", name, x.Labels)
		}
		var managers []string
		for _, m := range x.ManagedFields {
			managers = append(managers, m.Manager+"/"+string(m.Operation))
		}
		t.Logf("deployment %s managers: %v", name, managers)
	}
	r, err := routes.Get(t.Context(), k8stest.AppRoute, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Labels["team"] != "shop" {
		t.Errorf("the route lost the tool's label: %v", r.Labels)
	}
	if tr, _ := routeShare(r); tr != 60 {
		t.Errorf("the route's share at the end: %d%%, want the daemon's 60%%", tr)
	}
}
