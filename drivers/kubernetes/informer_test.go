package kubernetes

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// requests counts the requests made through a rest.Config.
type requests struct {
	mu   sync.Mutex
	seen []string
}

func (r *requests) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			r.mu.Lock()
			r.seen = append(r.seen, req.Method+" "+req.URL.RequestURI())
			r.mu.Unlock()
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

// since returns the requests made since the last call.
func (r *requests) since() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestIdleObserveAsksNothing checks that, once its caches have synced, a
// driver of the daemon observes a routed plan (two Deployments, the route,
// the Services, the flags) without a single request to the API server.
func TestIdleObserveAsksNothing(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 2, routed: true})
	var reqs requests
	d := f.openIn(t, f.cluster(t, reqs.wrap(f.cfg)))
	if err := d.PublishFlags(ctxT(t), map[string]int{"a": 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Observe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	reqs.since()
	for range 20 {
		if _, err := d.Observe(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	if got := reqs.since(); len(got) > 0 {
		t.Errorf("20 idle Observes made %d requests: %s", len(got), strings.Join(got, "; "))
	}
}

// wakes records the plans a Cluster wakes.
type wakes chan string

func (w wakes) wake(plan string) {
	select {
	case w <- plan:
	default: // the test reads them; a full channel only drops repeats
	}
}

// await waits up to within for a wake of plan, ignoring others.
func (w wakes) await(t *testing.T, plan string, within time.Duration) bool {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case p := <-w:
			if p == plan {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// drain drops the wakes so far, waiting until none came for longer than
// a plan's wakes are spaced, so that the next change wakes it at once.
func (w wakes) drain() {
	for {
		select {
		case <-w:
		case <-time.After(wakeEvery + 100*time.Millisecond):
			return
		}
	}
}

// TestWakeOnHandScale checks that someone scaling a plan's Deployment by
// hand, with another client, wakes the plan within a second, and that a
// change to an object of no plan wakes none.
func TestWakeOnHandScale(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 2, name: "shop"})
	w := make(wakes, 64)
	d := f.openIn(t, f.cluster(t, f.cfg, WithWake(w.wake)))
	if _, err := d.Observe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	w.drain()
	patch := []byte(`{"spec":{"replicas":3}}`)
	if _, err := f.kube.AppsV1().Deployments(f.ns).Patch(ctxT(t), candidateName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !w.await(t, "shop", time.Second) {
		t.Fatal("scaling the candidate by hand did not wake the plan within a second")
	}
	t.Logf("woken %s after the scale", time.Since(start).Round(time.Millisecond))
	st, err := d.Observe(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.CandidateReplicas != 3 {
		t.Errorf("after the wake, Observe shows %d candidate replicas, want 3", st.CandidateReplicas)
	}

	// Once the driver is closed, its plan is not woken any more.
	w.drain()
	d.Close()
	if _, err := f.kube.AppsV1().Deployments(f.ns).Patch(ctxT(t), candidateName, types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if w.await(t, "shop", time.Second) {
		t.Error("a closed driver's plan was woken")
	}
}

// TestWakeOnJobDone checks that a Job finishing wakes its plan, and that
// the driver then reports it done: nothing polls for it.
func TestWakeOnJobDone(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1, name: "shop"})
	w := make(wakes, 64)
	d := f.openIn(t, f.cluster(t, f.cfg, WithWake(w.wake)))
	if err := d.StartJob(ctxT(t), "wake-1", succeedingJob); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !w.await(t, "shop", time.Until(deadline)) {
			break
		}
		st, err := d.JobStatus(ctxT(t), "wake-1")
		if err != nil {
			t.Fatal(err)
		}
		if st.Done {
			if !st.Succeeded {
				t.Errorf("job = %+v, want it succeeded", st)
			}
			return
		}
	}
	t.Fatal("no wake showed the job done within a minute")
}

// TestReadYourWrites checks that right after the driver's writes, with no
// wait for the watches, Observe and JobStatus show them: the replicas and
// the split applied, the flags published, a job started or removed.
func TestReadYourWrites(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	d := f.cachedDriver(t)
	for i, target := range []drivers.Target{{Traffic: 25}, {Traffic: 50, Mirror: 10}, {Traffic: 0}, {Traffic: 75}} {
		if err := d.Apply(ctxT(t), target); err != nil {
			t.Fatalf("Apply(%+v): %v", target, err)
		}
		flags := map[string]int{"a": i * 10}
		if err := d.PublishFlags(ctxT(t), flags); err != nil {
			t.Fatal(err)
		}
		st, err := d.Observe(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		wantCandidate := (4*max(target.Traffic, target.Mirror) + 99) / 100
		if st.Traffic != target.Traffic || st.Mirror != target.Mirror || st.StableReplicas != 4 || st.CandidateReplicas != wantCandidate || st.Flags["a"] != i*10 {
			t.Errorf("Observe right after Apply(%+v) and PublishFlags(%v) = %+v; want candidate %d replicas", target, flags, st, wantCandidate)
		}
	}
	if err := d.StartJob(ctxT(t), "ryw", succeedingJob); err != nil {
		t.Fatal(err)
	}
	if _, err := d.JobStatus(ctxT(t), "ryw"); err != nil {
		t.Errorf("JobStatus right after StartJob: %v", err)
	}
	if err := drivertest.WaitFor(ctxT(t), 30*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := d.JobStatus(ctx, "ryw")
		return st.Done, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveJob(ctxT(t), "ryw"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.JobStatus(ctxT(t), "ryw"); !errors.Is(err, drivers.ErrJobNotFound) {
		t.Errorf("JobStatus right after RemoveJob: %v, want ErrJobNotFound", err)
	}
}

// TestNoInformerOutsideNamespaces checks that a plan in a namespace the
// daemon may not act in starts no informer there, nor anywhere.
func TestNoInformerOutsideNamespaces(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	var reqs requests
	cl := f.cluster(t, reqs.wrap(f.cfg), WithNamespaces("elsewhere"))
	if _, err := cl.Open(ctxT(t), f.plan); err == nil || !strings.Contains(err.Error(), "kubernetes.namespaces lists elsewhere") {
		t.Fatalf("opening a plan in %s with kubernetes.namespaces [elsewhere]: %v", f.ns, err)
	}
	if ns := cl.cache.namespaces(); len(ns) > 0 {
		t.Errorf("the cache watches in %v", ns)
	}
	time.Sleep(200 * time.Millisecond)
	if got := reqs.since(); len(got) > 0 {
		t.Errorf("opening a plan outside the namespaces made requests: %s", strings.Join(got, "; "))
	}
	if _, err := cl.cache.start(f.ns, "deployments"); err == nil {
		t.Errorf("the cache started an informer in %s", f.ns)
	}
	if slices.Contains(cl.cache.namespaces(), f.ns) {
		t.Errorf("the cache watches in %s", f.ns)
	}
}

// BenchmarkObserve measures an Observe of a routed plan from the
// informers' cache against one that asks the API server (two Deployments,
// the route, the Services and the flags ConfigMap: five requests).
func BenchmarkObserve(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			f := newFixture(b, fixtureOpts{replicas: 2, routed: true})
			d := mode.open(f, b)
			ctx := b.Context()
			if _, err := d.Observe(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Observe(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestWakeSpacing checks that a burst of changes to a plan's objects wakes
// it at once and then once more at the end of wakeEvery, not once per
// change, and that an object no plan reads wakes none.
func TestWakeSpacing(t *testing.T) {
	w := make(wakes, 64)
	x := newPlanIndex(w.wake)
	d := &Driver{plan: "shop", ns: "ns", stable: "v1", candidate: "v2", flags: "shop-flags"}
	x.register(d)
	dep := func(name string) metav1.Object { return &metav1.ObjectMeta{Namespace: "ns", Name: name} }
	start := time.Now()
	for range 10 {
		x.changed("deployments", dep("v2"))
		x.changed("deployments", dep("other"))
	}
	if !w.await(t, "shop", 100*time.Millisecond) {
		t.Fatal("the first change did not wake the plan at once")
	}
	if !w.await(t, "shop", wakeEvery+500*time.Millisecond) {
		t.Fatal("the rest of the burst did not wake the plan at the end of wakeEvery")
	}
	if took := time.Since(start); took < wakeEvery {
		t.Errorf("the second wake came after %s, before wakeEvery", took)
	}
	select {
	case p := <-w:
		t.Errorf("a third wake, of %s, for one burst", p)
	case <-time.After(wakeEvery + 200*time.Millisecond):
	}
	x.release(d)
	x.changed("deployments", dep("v2"))
	if w.await(t, "shop", 200*time.Millisecond) {
		t.Error("a released plan was woken")
	}
}

// TestInformersPerKind checks that a kind is watched only once a plan
// needs it: a plan split by replica ratio watches no route, nor Services;
// Jobs are watched from the first job on, autoscalers from the first
// Apply.
func TestInformersPerKind(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 2})
	cl := f.cluster(t, f.cfg)
	d := f.openIn(t, cl)
	running := func() []string {
		s, err := cl.cache.space(f.ns)
		if err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var kinds []string
		for k := range s.running {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds)
		return kinds
	}
	if _, err := d.Observe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := running(), []string{"configmaps", "deployments"}; !slices.Equal(got, want) {
		t.Errorf("watched after Observe: %v, want %v", got, want)
	}
	if err := d.Apply(ctxT(t), drivers.Target{Traffic: 50}); err != nil {
		t.Fatal(err)
	}
	if err := d.StartJob(ctxT(t), "kinds", succeedingJob); err != nil {
		t.Fatal(err)
	}
	got := running()
	for _, k := range []string{"horizontalpodautoscalers", "jobs"} {
		if !slices.Contains(got, k) {
			t.Errorf("watched after Apply and StartJob: %v, want %s among them", got, k)
		}
	}
	for _, k := range []string{"httproutes", "grpcroutes", "services"} {
		if slices.Contains(got, k) {
			t.Errorf("a plan without a route watches %s", k)
		}
	}
}

// TestNoKEDAWithoutItsCRD checks, on the second test cluster, where KEDA's
// CRD is never installed, that the driver scales without watching
// ScaledObjects, or asking for them, as autoscaler.go does without it.
func TestNoKEDAWithoutItsCRD(t *testing.T) {
	cfg := k8stest.EnvB(t)
	ns := k8stest.Namespace(t, cfg)
	k8stest.NewApp(t, cfg, ns, k8stest.AppOptions{Replicas: 2})
	f := &fixture{cfg: cfg, ns: ns, plan: &plan.Plan{
		APIVersion: plan.APIVersion, Kind: plan.Kind, Metadata: plan.Metadata{Name: "app"},
		Spec: plan.Spec{Driver: plan.Driver{Kubernetes: &plan.KubernetesDriver{
			Namespace: ns,
			Stable:    plan.KubernetesWorkload{Deployment: stableName},
			Candidate: plan.KubernetesWorkload{Deployment: candidateName},
		}}},
	}}
	var reqs requests
	cl := f.cluster(t, reqs.wrap(cfg))
	if ok, err := kedaServed(cl.cache.c); err != nil || ok {
		t.Fatalf("KEDA served on the second cluster: %t, %v; the test needs it not to be", ok, err)
	}
	d := f.openIn(t, cl)
	if err := d.Apply(ctxT(t), drivers.Target{Traffic: 50}); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs.since() {
		if strings.Contains(r, "scaledobjects") {
			t.Errorf("a request for ScaledObjects: %s", r)
		}
	}
	s, err := cl.cache.space(ns)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	_, watched := s.running["scaledobjects"]
	s.mu.Unlock()
	if watched {
		t.Error("ScaledObjects are watched on a cluster that does not serve them")
	}
}
