package daemon

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/hal9ai/hal9-migrate/reconcile"
)

// safetyLoop steps every plan each Interval, and the plans that asked for
// it (a measurement or check came in, the plans changed) at once. It reads
// the snapshot the Git loop left and never waits on Git.
func (d *Daemon) safetyLoop(ctx context.Context) {
	tick := d.Clock.NewTicker(d.Interval)
	defer tick.Stop()
	due := d.Clock.Now()
	d.cycle(ctx, nil, due)
	for {
		var only map[string]bool
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C():
			due = now
		case <-d.wakeSafety:
			d.mu.Lock()
			if !d.wakeAll {
				only = d.wakePlans
			}
			d.wakePlans, d.wakeAll = map[string]bool{}, false
			d.mu.Unlock()
			due = d.Clock.Now()
		}
		d.cycle(ctx, only, due)
	}
}

// cycle steps the plans of the current snapshot (only those named in only,
// when it is not nil) once, reports to the metrics, and tells the Git loop
// there may be something to commit. due is when the cycle was due, for the
// loop's lag.
func (d *Daemon) cycle(ctx context.Context, only map[string]bool, due time.Time) {
	d.mu.Lock()
	desired := d.desired
	d.mu.Unlock()
	// Another replica's plans are its own to step (the runner checks
	// again under a hold of each plan's shard).
	desired = d.owned(desired)
	if only != nil {
		// A plan woken wakes its whole group: members are stepped
		// together.
		groups := map[string]bool{}
		for _, ds := range desired {
			if g := ds.Plan.Spec.Group; g != "" && only[ds.Plan.Metadata.Name] {
				groups[g] = true
			}
		}
		var some []*reconcile.Desired
		for _, ds := range desired {
			if only[ds.Plan.Metadata.Name] || groups[ds.Plan.Spec.Group] {
				some = append(some, ds)
			}
		}
		desired = some
	}
	ctx, span := d.startSpan(ctx, "safety.cycle", attribute.Int("plans", len(desired)), attribute.Bool("woken", only != nil))
	defer span.End()
	started := d.Clock.Now()
	for _, r := range d.Runner.Cycle(ctx, desired) {
		if r.Err != nil && ctx.Err() == nil && !errors.Is(r.Err, reconcile.ErrNotHeld) {
			d.log().ErrorContext(ctx, "reconcile", "plan", r.Plan, "err", r.Err)
		}
	}
	end := d.Clock.Now()
	if d.Metrics != nil {
		d.Metrics.ReconcileDone(end.Sub(started))
	}
	if only == nil {
		d.observeMigrations(ctx, desired)
	}
	d.mu.Lock()
	d.lastCycle = end
	d.mu.Unlock()
	if d.Metrics != nil {
		d.Metrics.SafetyCycle(end, end.Sub(due))
	}
	signal(d.wakeCommit)
}

// observeMigrations hands every plan's record to the metrics, and tells
// the metrics, the guardrails and the runner to forget plans no longer
// followed (removed, or another replica's now).
func (d *Daemon) observeMigrations(ctx context.Context, desired []*reconcile.Desired) {
	now := map[string]bool{}
	for _, ds := range desired {
		name := ds.Plan.Metadata.Name
		now[name] = true
		if d.Metrics == nil {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil {
			d.log().Error("load record for metrics", "plan", name, "err", err)
			continue
		}
		d.Metrics.ObserveMigration(ds.Plan, rec)
	}
	d.mu.Lock()
	var gone []string
	for name := range d.reported {
		if !now[name] {
			gone = append(gone, name)
			delete(d.views, name)
		}
	}
	d.reported = now
	d.mu.Unlock()
	for _, name := range gone {
		if d.Metrics != nil {
			d.Metrics.Forget(name)
		}
		if f, ok := d.Runner.Guards.(Forgetter); ok {
			f.Forget(name)
		}
		d.Runner.Release(name)
	}
}
