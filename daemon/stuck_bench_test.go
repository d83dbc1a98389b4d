package daemon

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// stuckGit is a plan repository whose remote accepts and never answers:
// every call waits for its deadline.
type stuckGit struct{}

func (stuckGit) Head(ctx context.Context) (gitops.Hash, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

func (stuckGit) Sync(ctx context.Context) (gitops.Snapshot, error) {
	<-ctx.Done()
	return gitops.Snapshot{}, ctx.Err()
}

func (stuckGit) Commit(ctx context.Context, _ gitops.CommitRequest) (gitops.Hash, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// switchGuards are guardrail readings a benchmark switches while the daemon
// runs.
type switchGuards struct {
	mu       sync.Mutex
	readings []reconcile.Reading
}

func (g *switchGuards) set(rs []reconcile.Reading) {
	g.mu.Lock()
	g.readings = rs
	g.mu.Unlock()
}

func (g *switchGuards) Evaluate(context.Context, *plan.Plan, reconcile.Epoch) ([]reconcile.Reading, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]reconcile.Reading(nil), g.readings...), nil
}

// BenchmarkBreachToRollbackGitStuck measures, on the running daemon (both
// loops, the real clock), from a guardrail measurement that breaches to the
// driver applying the rollback, while every call to the Git remote hangs
// until its deadline: the daemon was restarted with its plan kept in the
// store, and has never reached Git. Each iteration puts the migration back
// at canary 10% (through the store and the driver, as a restarted daemon
// would find it), then the guardrail breaches and the evaluator wakes the
// plan, as a measurement coming in does.
func BenchmarkBreachToRollbackGitStuck(b *testing.B) {
	src, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.SavePlan(ctx, store.KeptPlan{Plan: "base", File: "plans/shop.yaml", Data: src, Commit: "c0ffee", Digest: digest(src)}); err != nil {
		b.Fatal(err)
	}
	v, err := plan.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	f := fake.New()
	g := &switchGuards{readings: healthy()}
	d := &Daemon{
		Git: stuckGit{}, Validator: v, Store: st, Plans: st, Clock: clock.RealClock{},
		Poll: time.Second, Interval: time.Hour, SyncTimeout: time.Hour, CommitTimeout: time.Hour,
		Author: gitops.Signature{Name: "hal9-migrate", Email: "bot@example.com"},
		Runner: &reconcile.Runner{Store: st, Open: f.Opener(), Guards: g, Clock: clock.RealClock{}, Workers: 2},
	}
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	canary10 := plan.Position{Phase: "canary", Percentage: 10}
	breached := []reconcile.Reading{{Name: "errors", Health: reconcile.Breached, Value: 0.3, Bound: "max 0.05"},
		{Name: "health", Health: reconcile.Healthy}}
	drv := f.Driver("base")
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		g.set(healthy())
		for try := 0; ; try++ {
			rec, err := st.Load(ctx, "base")
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			rec.Position, rec.Pending, rec.EnteredAt, rec.GreenSince = canary10, nil, now, now
			rec.Status, rec.Commit, rec.Failed = reconcile.StatusHolding, "c0ffee", nil
			if _, err = st.Save(ctx, rec); err == nil {
				break
			}
			if try > 100 {
				b.Fatal(err) // the daemon saves at the same time: load again
			}
		}
		s := drv.State()
		s.Traffic, s.Mirror = 10, 0
		if err := drv.SetState(s); err != nil {
			b.Fatal(err)
		}
		d.Runner.Forget()
		applied := len(drv.Applied())
		b.StartTimer()

		g.set(breached)
		d.WakePlan("base")
		for deadline := time.Now().Add(10 * time.Second); ; {
			if a := drv.Applied(); len(a) > applied && a[len(a)-1].Traffic == 5 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("no rollback within 10s: applied %v", drv.Applied())
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
}
