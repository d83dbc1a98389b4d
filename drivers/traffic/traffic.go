// Package traffic splits a plan's requests between its stable and candidate
// workloads. A Router carries the split (nginx's weights, an HTTPRoute's,
// HAProxy's); Shift is the one order in which every driver changes replicas
// and split together, so that no request goes to a replica that is not
// there yet and none is taken away while it still serves; RatioFor is the
// pure arithmetic of the router of last resort, the replica ratio.
//
// The package knows nothing of Docker or Kubernetes: a driver's view of its
// two workloads is the type parameter W, read by the driver and handed to
// the router, so that one Apply reads the workloads once and the router sees
// the replicas the driver just scaled.
//
// A new router is one file in its driver's package, implementing Router for
// that driver's W, plus a line in the driver's table of routers.
package traffic

import (
	"context"
	"errors"
	"fmt"
)

// Split is what a router carries: the candidate's share of live requests
// and the share of requests copied to it with the responses dropped, each
// 0..100.
type Split struct {
	Traffic int `json:"traffic"`
	Mirror  int `json:"mirror"`
}

// String is the split as the drivers record it ("traffic=25,mirror=0").
func (s Split) String() string { return fmt.Sprintf("traffic=%d,mirror=%d", s.Traffic, s.Mirror) }

// Valid reports an error for a share outside 0..100.
func (s Split) Valid() error {
	switch {
	case s.Traffic < 0 || s.Traffic > 100:
		return fmt.Errorf("traffic %d%% is not within 0..100", s.Traffic)
	case s.Mirror < 0 || s.Mirror > 100:
		return fmt.Errorf("mirror %d%% is not within 0..100", s.Mirror)
	}
	return nil
}

// ErrCannotMirror is wrapped by a router's Check for a mirrored share it
// cannot copy.
var ErrCannotMirror = errors.New("cannot mirror")

// Router carries a split between a driver's two workloads, as the driver's
// view w shows them: which replicas run, and where.
type Router[W any] interface {
	// Check says, before anything changes, whether the router can carry
	// sp for w now: a router that cannot copy requests refuses a mirrored
	// share with an error wrapping ErrCannotMirror that says what can, and
	// one that is not there or not running says so, before Shift scales
	// anything for it.
	Check(w W, sp Split) error
	// Observe reads the split the router carries now. Replicas it sends
	// to that are no longer among w's count for nothing, so such drift
	// shows as a split off its target.
	Observe(ctx context.Context, w W) (Split, error)
	// Route makes the router carry sp to w's running replicas. It is
	// "make it so": repeating it changes nothing.
	Route(ctx context.Context, w W, sp Split) error
}

// Replicas are how many replicas each side runs.
type Replicas struct {
	Stable, Candidate int
}

// Workloads is what Shift needs of a driver's two workloads.
type Workloads[W any] interface {
	// Replicas reports the replicas each side has in w.
	Replicas(w W) Replicas
	// Scale sets each side's replicas to r and returns the workloads as
	// they are then. At the final count it also settles what the counts
	// do not show, such as a decommission; with nothing to do it returns
	// w at once.
	Scale(ctx context.Context, w W, r Replicas) (W, error)
	// Ready waits, within the driver's bound, until each side has at
	// least r ready, and returns the workloads as they are then. A driver
	// whose Scale returns only once new replicas run may just read them
	// again.
	Ready(ctx context.Context, r Replicas) (W, error)
}

// Shift brings the workloads to want and the router to sp, in the one
// order that keeps every request served:
//
//  1. scale up the sides that gain replicas (to the larger of what they
//     have and want), and wait for the new ones to be ready;
//  2. route sp;
//  3. scale down the sides that lose replicas, which the route no longer
//     sends anything more than they can take, and settle the rest (a
//     decommission).
//
// A side never loses a replica before the route has moved requests off it,
// and the route never sends to a replica not ready. Router failures leave
// the scaled-up replicas in place: the next Shift finds them and goes on.
// With the replica ratio (ByReplicas) the replicas are the split: there is no
// route to wait for, so Shift does not wait for readiness either, and the
// capacity added in step 1 takes requests as soon as it is ready.
func Shift[W any](ctx context.Context, ws Workloads[W], r Router[W], w W, sp Split, want Replicas) error {
	if err := sp.Valid(); err != nil {
		return err
	}
	if err := r.Check(w, sp); err != nil {
		return err
	}
	_, byReplicas := r.(*ByReplicas[W])
	have := ws.Replicas(w)
	up := Replicas{Stable: max(have.Stable, want.Stable), Candidate: max(have.Candidate, want.Candidate)}
	if up != have {
		var err error
		if w, err = ws.Scale(ctx, w, up); err != nil {
			return err
		}
		if !byReplicas {
			if w, err = ws.Ready(ctx, up); err != nil {
				return err
			}
		}
	}
	if err := r.Route(ctx, w, sp); err != nil {
		return err
	}
	// Always: counts are not all a driver settles here (a decommission
	// leaves stable's count at zero), and a Scale with nothing to do
	// returns at once.
	_, err := ws.Scale(ctx, w, want)
	return err
}

// ByReplicas is the router of last resort: no router at all. Requests follow
// the replica ratio, so the split is whatever share of the replicas the
// candidate runs (the driver scales them as RatioFor says), Route has
// nothing to do, and nothing can be mirrored.
type ByReplicas[W any] struct {
	// Share is the candidate's share of the traffic in w: of the replicas
	// requests reach (running, or ready), by Share.
	Share func(w W) int
	// Mirror is the error for a mirrored share, naming the routers the
	// driver offers; it wraps ErrCannotMirror.
	Mirror error
}

// Check refuses a mirrored share.
func (r *ByReplicas[W]) Check(_ W, sp Split) error {
	if sp.Mirror > 0 {
		return r.Mirror
	}
	return nil
}

// Observe is the replicas' share.
func (r *ByReplicas[W]) Observe(_ context.Context, w W) (Split, error) {
	return Split{Traffic: r.Share(w)}, nil
}

// Route does nothing: the replicas are the split.
func (r *ByReplicas[W]) Route(context.Context, W, Split) error { return nil }
