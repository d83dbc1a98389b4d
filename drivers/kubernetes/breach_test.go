package kubernetes

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/internal/testapp"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

const breachPlan = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: %s}
spec:
  target: {phase: canary, percentage: 50}
  driver:
    kubernetes:
      namespace: %s
      stable: {deployment: app-stable}
      candidate: {deployment: app-candidate}
      traffic: {httpRoute: app}
  phases:
    - name: canary
      steps: [10, 50]
      soak: 1s
  guardrails:
    - name: candidate-health
      http: {url: '%s/health', timeout: 1s}
      failures: 2
  rollback: {to: start}
`

// startTestapp runs the testapp on a free port of 127.0.0.1 until the test
// ends, and returns its base URL.
func startTestapp(t *testing.T, version string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(testapp.Binary(t), "serve", "-addr", addr, "-version", version)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + addr
	err = drivertest.WaitFor(t.Context(), 10*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("testapp on %s: %v", addr, err)
	}
	return base
}

func setUnhealthy(t *testing.T, base string, unhealthy bool) {
	t.Helper()
	resp, err := http.PostForm(base+"/control", url.Values{"unhealthy": {fmt.Sprint(unhealthy)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s/control: %s", base, resp.Status)
	}
}

// TestBreachRollsBack runs a plan with an HTTP health guardrail on a
// testapp standing in for the candidate: switched unhealthy at canary 50%,
// the guardrail breaches after two failed checks and the reconciler rolls
// the route back to the start (rollback.to; with previous-step it would go
// on to the start anyway, the candidate still failing at 10%), and stays
// there, healthy again, until a newer commit.
func TestBreachRollsBack(t *testing.T) {
	app := startTestapp(t, "v2")
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true, name: k8stest.NameFor("breach")})
	name := f.plan.Metadata.Name
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "plans"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(breachPlan, name, f.ns, app)
	if err := os.WriteFile(filepath.Join(dir, "plans", name+".yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	dsn := os.Getenv("HAL9_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "sqlite://" + filepath.Join(dir, "state.db")
	}
	e := e2eEnv{dir: dir, dsn: dsn, kubeconfig: k8stest.Kubeconfig(t), plan: name, ns: f.ns}
	r, p, st, err := e.engine(t.Context(), "replica-0")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r.Guards = guardrails.NewEvaluator(guardrails.Providers{"http": guardrails.NewHTTP(nil)})

	w := watchRoute(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runPlan(ctx, r, p) }()
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { cancel(); <-done }) }
	defer stop()

	waitRecord(t, st, name, 60*time.Second, func(r store.Record) bool {
		return r.Position.String() == "canary 50%" && r.Pending == nil
	})
	setUnhealthy(t, app, true)
	rec := waitRecord(t, st, name, 30*time.Second, func(r store.Record) bool {
		return r.Status == reconcile.StatusRolledBack && r.Pending == nil
	})
	if !rec.Position.IsStart() || len(rec.Failed) != 1 || rec.Failed[0].Position.String() != "canary 50%" {
		t.Fatalf("after the breach: position %s, failed %+v", rec.Position, rec.Failed)
	}
	d := f.driver(t)
	if _, err := drivertest.Converge(t.Context(), d, drivers.Target{}, 0, 30*time.Second, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Healthy again, it does not advance again under the same commit.
	setUnhealthy(t, app, false)
	time.Sleep(3 * time.Second)
	if rec, _ = st.Load(t.Context(), name); !rec.Position.IsStart() || rec.Status != reconcile.StatusRolledBack {
		t.Errorf("after recovering: %s, %s; want to stay rolled back at the start", rec.Position, rec.Status)
	}
	stop()

	if got, want := w.seen(), []split{{Traffic: 0, Mirror: 0}, {Traffic: 10, Mirror: 0}, {Traffic: 50, Mirror: 0}, {Traffic: 0, Mirror: 0}}; !slices.Equal(got, want) {
		t.Errorf("the route showed %v, want %v", got, want)
	}
	history, err := st.History(t.Context(), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	var rollback *store.Event
	for i := range history {
		if history[i].Kind == string(reconcile.Rollback) {
			rollback = &history[i]
		}
	}
	if rollback == nil || rollback.From.String() != "canary 50%" || !rollback.To.IsStart() ||
		!strings.Contains(rollback.Reason, "candidate-health") {
		t.Errorf("rollback event: %+v", rollback)
	}
}
