package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/leader"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// The end-to-end tests run the reconciler with this driver against the
// test API server: a plan walks every kind of phase with soaks of a
// second, and (in child processes, this test binary re-executed) two
// daemon replicas behind leader election take turns when the leader is
// killed.

const e2ePlan = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: %s}
spec:
  target: {phase: full}
  driver:
    kubernetes:
      namespace: %s
      stable: {deployment: app-stable}
      candidate: {deployment: app-candidate}
      traffic: {httpRoute: app}
  phases:
    - name: shadow
      mirror: 100
      soak: 1s
    - name: canary
      steps: [10, 50]
      soak: 1500ms
      checkpoint: pre-canary
    - name: ramp-up
      steps: [75]
      soak: 1s
    - name: full
      steps: [100]
      decommission: {after: 1s}
  features: {new_path: 20}
`

// The positions the plan enters, in order, and the split the route shows
// at each (before the first, the route sends everything to stable).
var (
	e2eEntered = []string{"shadow 0%", "canary 10%", "canary 50%", "ramp-up 75%", "full 100%"}
	e2eSplits  = []split{{Traffic: 0, Mirror: 0}, {Traffic: 0, Mirror: 100}, {Traffic: 10, Mirror: 0}, {Traffic: 50, Mirror: 0}, {Traffic: 75, Mirror: 0}, {Traffic: 100, Mirror: 0}}
)

// e2eEnv is what a run of the plan needs, in the test and in children.
type e2eEnv struct {
	dir        string // the plan folder and the SQLite file
	dsn        string // the store
	kubeconfig string
	plan       string
	ns         string
}

func (e e2eEnv) environ() []string {
	return []string{"HAL9_E2E_DIR=" + e.dir, "HAL9_E2E_DSN=" + e.dsn, "HAL9_E2E_KUBECONFIG=" + e.kubeconfig,
		"HAL9_E2E_PLAN=" + e.plan, "HAL9_E2E_NS=" + e.ns}
}

func envFromEnviron() e2eEnv {
	return e2eEnv{dir: os.Getenv("HAL9_E2E_DIR"), dsn: os.Getenv("HAL9_E2E_DSN"), kubeconfig: os.Getenv("HAL9_E2E_KUBECONFIG"),
		plan: os.Getenv("HAL9_E2E_PLAN"), ns: os.Getenv("HAL9_E2E_NS")}
}

// newE2E makes the workloads, writes the plan and picks the store: SQLite
// in the test's folder, or PostgreSQL when HAL9_TEST_POSTGRES_DSN names
// one (the plan's name is unique, so runs do not share records).
func newE2E(t *testing.T) (*fixture, e2eEnv) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true, name: k8stest.NameFor("e2e")})
	e := e2eEnv{dir: t.TempDir(), kubeconfig: k8stest.Kubeconfig(t), plan: f.plan.Metadata.Name, ns: f.ns}
	if err := os.MkdirAll(filepath.Join(e.dir, "plans"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(e2ePlan, e.plan, e.ns)
	if err := os.WriteFile(filepath.Join(e.dir, "plans", e.plan+".yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	e.dsn = os.Getenv("HAL9_TEST_POSTGRES_DSN")
	if e.dsn == "" {
		e.dsn = "sqlite://" + filepath.Join(e.dir, "state.db")
	}
	return f, e
}

// engine opens the plan, the store and a runner driving the test API
// server, as a daemon replica would.
func (e e2eEnv) engine(ctx context.Context, identity string) (*reconcile.Runner, *plan.Plan, store.Store, error) {
	v, err := plan.NewValidator()
	if err != nil {
		return nil, nil, nil, err
	}
	set, err := v.Load(filepath.Join(e.dir, "plans"))
	if err != nil {
		return nil, nil, nil, err
	}
	p := set.Lookup(e.plan)
	if p == nil {
		return nil, nil, nil, fmt.Errorf("plan %s not loaded", e.plan)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := store.Open(ctx, e.dsn)
	if err != nil {
		return nil, nil, nil, err
	}
	r := &reconcile.Runner{Store: st, Open: Opener(cfg, WithInstance(identity)), Clock: clock.RealClock{}, Workers: 1,
		StepTimeout: 30 * time.Second, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("replica", identity)}
	return r, p, st, nil
}

func runPlan(ctx context.Context, r *reconcile.Runner, p *plan.Plan) error {
	desired := []*reconcile.Desired{reconcile.NewDesired(p, "c1")}
	return r.Run(ctx, func(context.Context) ([]*reconcile.Desired, error) { return desired, nil }, 100*time.Millisecond, clock.RealClock{})
}

// routeWatch polls the route and keeps every split it shows, in order,
// without repeats.
type routeWatch struct {
	mu     sync.Mutex
	splits []split
	stop   context.CancelFunc
	done   chan struct{}
}

func watchRoute(t *testing.T, f *fixture) *routeWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &routeWatch{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			r, err := f.gw.GatewayV1().HTTPRoutes(f.ns).Get(ctx, routeName, metav1.GetOptions{})
			if err == nil {
				sp := routeSplit(r)
				w.mu.Lock()
				if len(w.splits) == 0 || w.splits[len(w.splits)-1] != sp {
					w.splits = append(w.splits, sp)
				}
				w.mu.Unlock()
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

func (w *routeWatch) seen() []split {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.splits)
}

// routeSplit reads the route the way a person would: the candidate's
// weight out of both, and the mirror filter's percent.
func routeSplit(r *gatewayv1.HTTPRoute) split {
	var sp split
	var sw, cw int32
	for _, b := range r.Spec.Rules[0].BackendRefs {
		switch b.Name {
		case stableName:
			sw = *b.Weight
		case candidateName:
			cw = *b.Weight
		}
	}
	if sw == 0 && cw == 0 {
		sw = 1 // the initial route: stable only, default weight
	}
	sp.Traffic = int(100 * cw / (sw + cw))
	for _, fl := range r.Spec.Rules[0].Filters {
		if fl.RequestMirror != nil && string(fl.RequestMirror.BackendRef.Name) == candidateName {
			sp.Mirror = int(*fl.RequestMirror.Percent)
		}
	}
	return sp
}

// waitRecord polls the store until the plan's record satisfies ok.
func waitRecord(t *testing.T, st store.Store, name string, within time.Duration, ok func(store.Record) bool) store.Record {
	t.Helper()
	var rec store.Record
	err := drivertest.WaitFor(t.Context(), within, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		var err error
		rec, err = st.Load(ctx, name)
		return err == nil && ok(rec), err
	})
	if err != nil {
		t.Fatalf("record of %s: %v (last %+v)", name, err, rec)
	}
	return rec
}

// waitDone waits until the record says the plan is complete and the
// workloads show it: stable decommissioned, the flags published.
func waitDone(t *testing.T, f *fixture, st store.Store, name string) store.Record {
	t.Helper()
	d := f.driver(t)
	var obs drivers.State
	rec := waitRecord(t, st, name, 90*time.Second, func(r store.Record) bool {
		if !r.Decommissioned || r.Status != reconcile.StatusCompleted || r.Pending != nil {
			return false
		}
		var err error
		obs, err = d.Observe(t.Context())
		return err == nil && obs.Decommissioned && obs.Flags["new_path"] == 20
	})
	if obs.StableReplicas != 0 || obs.CandidateReplicas != 4 || obs.Traffic != 100 || obs.Mirror != 0 {
		t.Errorf("at the end: %+v", obs)
	}
	return rec
}

// checkHistory checks the plan entered each position once, in order, and
// soaked each step for its whole soak before advancing.
func checkHistory(t *testing.T, st store.Store, name string) []store.Event {
	t.Helper()
	history, err := st.History(t.Context(), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	var entered, advanced []string
	enteredAt := map[string]time.Time{}
	for _, e := range history {
		switch e.Kind {
		case "Entered":
			entered = append(entered, e.To.String())
			enteredAt[e.To.String()] = e.At
		case string(reconcile.Advance):
			advanced = append(advanced, e.To.String())
			// The soak of the position left is whole.
			if from := e.From.String(); !e.From.IsStart() {
				soak := map[string]time.Duration{"shadow": time.Second, "canary": 1500 * time.Millisecond, "ramp-up": time.Second}[e.From.Phase]
				if held := e.At.Sub(enteredAt[from]); held < soak {
					t.Errorf("left %s after %s, before its soak of %s", from, held, soak)
				}
			}
		}
	}
	if !slices.Equal(entered, e2eEntered) {
		t.Errorf("positions entered: %v, want each of %v once, in order", entered, e2eEntered)
	}
	if !slices.Equal(advanced, e2eEntered) {
		t.Errorf("advances: %v, want %v", advanced, e2eEntered)
	}
	return history
}

// TestEndToEnd walks the plan shadow → canary → ramp-up → full and
// decommissions stable, checking the route at every step.
func TestEndToEnd(t *testing.T) {
	f, e := newE2E(t)
	w := watchRoute(t, f)
	r, p, st, err := e.engine(t.Context(), "replica-0")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runPlan(ctx, r, p) }()
	rec := waitDone(t, f, st, e.plan)
	cancel()
	<-done

	if got := w.seen(); !slices.Equal(got, e2eSplits) {
		t.Errorf("the route showed %v, want %v", got, e2eSplits)
	}
	history := checkHistory(t, st, e.plan)
	if _, ok := rec.Checkpoints["pre-canary"]; !ok {
		t.Errorf("no pre-canary checkpoint: %+v", rec.Checkpoints)
	}
	kinds := make([]string, len(history))
	for i, ev := range history {
		kinds[i] = ev.Kind + " " + ev.To.String()
	}
	t.Logf("history: %s", strings.Join(kinds, ", "))
}

// Children of TestTakeover: a daemon replica that campaigns for the lease
// and, while it leads, reconciles the plan.
const takeoverChildEnv = "HAL9_E2E_REPLICA"

// takeoverLease are the timings of the replicas: a dead leader is replaced
// within 2s.
var takeoverLease = leader.Durations{Lease: 2 * time.Second, Renew: 1500 * time.Millisecond, Retry: 200 * time.Millisecond}

func TestMain(m *testing.M) {
	if id := os.Getenv(takeoverChildEnv); id != "" {
		os.Exit(replica(id))
	}
	os.Exit(m.Run())
}

func replica(identity string) int {
	e := envFromEnviron()
	ctx := context.Background()
	r, p, st, err := e.engine(ctx, identity)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer st.Close()
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	err = leader.Run(ctx, cfg, identity, leader.Lease{Namespace: e.ns, Name: "hal9-migrate"}, takeoverLease,
		func(ctx context.Context) { _ = runPlan(ctx, r, p) })
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// TestTakeover runs two replicas sharing the store, kills the leader with
// SIGKILL in the middle of a soak, and checks the standby takes over
// within the lease duration and finishes the plan from the durable
// record: no step repeated, none skipped, no soak cut short.
func TestTakeover(t *testing.T) {
	f, e := newE2E(t)
	w := watchRoute(t, f)
	st, err := store.Open(t.Context(), e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	procs := map[string]*exec.Cmd{}
	for _, id := range []string{"replica-a", "replica-b"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(append(os.Environ(), e.environ()...), takeoverChildEnv+"="+id)
		cmd.Stderr = &prefixWriter{t: t, prefix: id}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[id] = cmd
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}

	// Mid-soak: the first canary step entered, its soak not over.
	rec := waitRecord(t, st, e.plan, 60*time.Second, func(r store.Record) bool {
		return r.Position.Phase == "canary" && r.Position.Percentage == 10 && r.Pending == nil
	})
	first := leaseHolder(t, f)
	if procs[first] == nil {
		t.Fatalf("the lease is held by %q, not a replica", first)
	}
	if err := procs[first].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed %s %s after it entered %s", first, killed.Sub(rec.EnteredAt).Round(time.Millisecond), rec.Position)

	var second string
	err = drivertest.WaitFor(t.Context(), 3*takeoverLease.Lease, 20*time.Millisecond, func(context.Context) (bool, error) {
		second = leaseHolderOrEmpty(t, f)
		return second != "" && second != first, nil
	})
	if err != nil {
		t.Fatalf("no new leader after %s: %v", 3*takeoverLease.Lease, err)
	}
	took := time.Since(killed)
	t.Logf("%s leads %s after the kill", second, took.Round(time.Millisecond))
	// The standby sees the lease expire at its first retry after the
	// lease duration has passed since the last renewal it saw, which was
	// at most a retry (with client-go's jitter) before the kill.
	if limit := takeoverLease.Lease + 3*takeoverLease.Retry; took > limit {
		t.Errorf("takeover took %s, more than the lease duration and its retries (%s)", took, limit)
	}

	waitDone(t, f, st, e.plan)
	if got := w.seen(); !slices.Equal(got, e2eSplits) {
		t.Errorf("the route showed %v, want %v", got, e2eSplits)
	}
	history := checkHistory(t, st, e.plan)
	// The standby resumed at the soak of canary 10%: the next advance is
	// its, and came after the whole soak.
	for _, ev := range history {
		if ev.Kind == string(reconcile.Advance) && ev.To.String() == "canary 50%" {
			if ev.At.Before(killed) {
				t.Errorf("canary 50%% was entered before the kill at %s: %+v", killed, ev)
			}
		}
	}
}

func leaseHolderOrEmpty(t *testing.T, f *fixture) string {
	l, err := f.kube.CoordinationV1().Leases(f.ns).Get(t.Context(), "hal9-migrate", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func leaseHolder(t *testing.T, f *fixture) string {
	t.Helper()
	if h := leaseHolderOrEmpty(t, f); h != "" {
		return h
	}
	t.Fatal("no lease holder")
	return ""
}

// prefixWriter logs a child's output through the test, line by line.
type prefixWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := slices.Index(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(w.prefix + ": " + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
