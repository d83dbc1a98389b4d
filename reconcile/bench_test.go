package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/plan/plantest"
	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/tracing"
)

// idlePlans sets up n plans at rest at their targets: a runner over the
// SQLite store and the fake driver, stepped until nothing changes.
func idlePlans(b *testing.B, n int) (*Runner, []*Desired) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "plans"), 0o755); err != nil {
		b.Fatal(err)
	}
	if _, err := plantest.WriteDir(filepath.Join(dir, "plans"), n, 5); err != nil {
		b.Fatal(err)
	}
	v, err := plan.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	set, err := v.Load(filepath.Join(dir, "plans"))
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	clk := clocktesting.NewFakeClock(t0)
	f := fake.New(fake.WithClock(clk))
	r := &Runner{Store: st, Open: f.Opener(), Clock: clk, Workers: runtime.GOMAXPROCS(0)}
	desired := make([]*Desired, len(set.Plans))
	for i, p := range set.Plans {
		desired[i] = NewDesired(p, "c1")
	}
	// Walk every plan to its target: soaks pass in big clock steps.
	for range 200 {
		busy := false
		for _, res := range r.Cycle(ctx, desired) {
			if res.Err != nil {
				b.Fatal(res.Err)
			}
			if res.Action.Kind != Wait {
				busy = true
			}
		}
		if !busy {
			return r, desired
		}
		clk.Step(48 * time.Hour)
	}
	b.Fatal("plans did not come to rest")
	return nil, nil
}

// BenchmarkCycle1000Idle is one reconcile cycle over 1,000 plans at rest:
// observe, decide, nothing to do.
func BenchmarkCycle1000Idle(b *testing.B) {
	r, desired := idlePlans(b, 1000)
	ctx := context.Background()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	heap, rss := float64(m.HeapInuse)/(1<<20), rssMB()
	b.ResetTimer()
	for b.Loop() {
		for _, res := range r.Cycle(ctx, desired) {
			if res.Err != nil || res.Action.Kind != Wait {
				b.Fatalf("%s: %s %v", res.Plan, res.Action.Kind, res.Err)
			}
		}
	}
	b.ReportMetric(heap, "MB-heap")
	b.ReportMetric(rss, "MB-rss")
	runtime.KeepAlive(r)
}

// BenchmarkCycle1000IdleTraced is BenchmarkCycle1000Idle under a span of
// the daemon's tracer provider: the ring, and a batch processor exporting
// to nothing, as with otlp.endpoint set. Compare the two for the cost of
// tracing the idle cycle.
func BenchmarkCycle1000IdleTraced(b *testing.B) {
	r, desired := idlePlans(b, 1000)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracing.NewRing(0, 0)),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer tp.Shutdown(context.Background())
	tr := tp.Tracer("bench")
	runtime.GC()
	b.ResetTimer()
	for b.Loop() {
		ctx, span := tr.Start(context.Background(), "safety.cycle")
		for _, res := range r.Cycle(ctx, desired) {
			if res.Err != nil || res.Action.Kind != Wait {
				b.Fatalf("%s: %s %v", res.Plan, res.Action.Kind, res.Err)
			}
		}
		span.End()
	}
}

// rssMB reads the resident set size of this process.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}
