package traffic

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// sides is a toy view of two workloads: the replicas each side runs.
type sides struct{ r Replicas }

// recorder records the calls Shift makes, in order.
type recorder struct {
	calls    []string
	routeErr error
}

func (c *recorder) Replicas(w sides) Replicas { return w.r }

func (c *recorder) Scale(_ context.Context, _ sides, r Replicas) (sides, error) {
	c.calls = append(c.calls, fmt.Sprintf("scale %d/%d", r.Stable, r.Candidate))
	return sides{r}, nil
}

func (c *recorder) Ready(_ context.Context, r Replicas) (sides, error) {
	c.calls = append(c.calls, fmt.Sprintf("ready %d/%d", r.Stable, r.Candidate))
	return sides{r}, nil
}

func (c *recorder) Check(sides, Split) error { return nil }

func (c *recorder) Observe(context.Context, sides) (Split, error) { return Split{}, nil }

func (c *recorder) Route(_ context.Context, w sides, sp Split) error {
	c.calls = append(c.calls, fmt.Sprintf("route %s to %d/%d", sp, w.r.Stable, w.r.Candidate))
	return c.routeErr
}

func TestShiftOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		have      Replicas
		sp        Split
		want      Replicas
		routeErr  error
		wantCalls []string
	}{
		{"candidate grows: up, ready, route", Replicas{4, 1}, Split{Traffic: 50}, Replicas{4, 2},
			nil, []string{"scale 4/2", "ready 4/2", "route traffic=50,mirror=0 to 4/2", "scale 4/2"}},
		{"stable shrinks after the route", Replicas{4, 4}, Split{Traffic: 100}, Replicas{0, 4},
			nil, []string{"route traffic=100,mirror=0 to 4/4", "scale 0/4"}},
		{"both: up first, down last", Replicas{4, 1}, Split{Traffic: 100}, Replicas{0, 4},
			nil, []string{"scale 4/4", "ready 4/4", "route traffic=100,mirror=0 to 4/4", "scale 0/4"}},
		{"nothing to scale up: the final Scale settles the rest", Replicas{4, 2}, Split{Traffic: 25}, Replicas{4, 2},
			nil, []string{"route traffic=25,mirror=0 to 4/2", "scale 4/2"}},
		{"a failed route scales nothing down", Replicas{4, 1}, Split{Traffic: 100}, Replicas{0, 4},
			errors.New("refused"), []string{"scale 4/4", "ready 4/4", "route traffic=100,mirror=0 to 4/4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &recorder{routeErr: tc.routeErr}
			err := Shift[sides](context.Background(), c, c, sides{tc.have}, tc.sp, tc.want)
			if !errors.Is(err, tc.routeErr) {
				t.Fatalf("Shift: %v, want %v", err, tc.routeErr)
			}
			if !reflect.DeepEqual(c.calls, tc.wantCalls) {
				t.Errorf("calls %q, want %q", c.calls, tc.wantCalls)
			}
		})
	}
}

// TestShiftByReplicas: with the replica ratio the replicas are the split:
// no wait for readiness, and a mirrored share is refused before anything
// is scaled.
func TestShiftByReplicas(t *testing.T) {
	c := &recorder{}
	noMirror := fmt.Errorf("mirroring needs a router: %w", ErrCannotMirror)
	r := &ByReplicas[sides]{Share: func(w sides) int { return Share(w.r.Candidate, w.r.Stable+w.r.Candidate) }, Mirror: noMirror}
	if err := Shift[sides](context.Background(), c, r, sides{Replicas{4, 0}}, Split{Traffic: 25}, Replicas{3, 1}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"scale 4/1", "scale 3/1"}; !reflect.DeepEqual(c.calls, want) {
		t.Errorf("calls %q, want %q", c.calls, want)
	}
	if sp, _ := r.Observe(context.Background(), sides{Replicas{3, 1}}); sp != (Split{Traffic: 25}) {
		t.Errorf("Observe = %v, want traffic=25", sp)
	}
	c.calls = nil
	err := Shift[sides](context.Background(), c, r, sides{Replicas{4, 0}}, Split{Mirror: 10}, Replicas{4, 1})
	if !errors.Is(err, ErrCannotMirror) || len(c.calls) > 0 {
		t.Errorf("mirror by replica ratio: %v after %q, want ErrCannotMirror before any call", err, c.calls)
	}
	if err := Shift[sides](context.Background(), c, r, sides{}, Split{Traffic: 101}, Replicas{}); err == nil {
		t.Error("traffic 101%: no error")
	}
}
