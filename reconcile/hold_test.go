package reconcile

import (
	"context"
	"errors"
	"testing"
)

// TestCycleStepsOnlyWhatItHolds: a unit Hold refuses is not stepped and
// says ErrNotHeld; one it grants is stepped under the hold's context, and
// the hold is given back once the step has ended.
func TestCycleStepsOnlyWhatItHolds(t *testing.T) {
	e := newEngine(t)
	d := NewDesired(loadPlan(t), "c1")
	held, done := 0, 0
	e.run.Hold = func(ctx context.Context, ds []*Desired) (context.Context, func(), bool) {
		return ctx, func() { done++ }, false
	}
	res := e.run.Cycle(context.Background(), []*Desired{d})
	if !errors.Is(res[0].Err, ErrNotHeld) || len(e.fake.Driver("base").Applied()) != 0 {
		t.Fatalf("a unit not held: %+v, applied %v", res[0], e.fake.Driver("base").Applied())
	}
	if rec, _ := e.store.Load(context.Background(), "base"); rec.Version != 0 {
		t.Fatalf("a unit not held was recorded: %+v", rec)
	}
	type key struct{}
	e.run.Hold = func(ctx context.Context, ds []*Desired) (context.Context, func(), bool) {
		held++
		return context.WithValue(ctx, key{}, true), func() { done++ }, true
	}
	res = e.run.Cycle(context.Background(), []*Desired{d})
	if res[0].Err != nil || held != 1 || done != 1 {
		t.Fatalf("a unit held: %+v, held %d, given back %d", res[0], held, done)
	}
}
