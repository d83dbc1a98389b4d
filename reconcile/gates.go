package reconcile

import (
	"fmt"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// Peer is what is known of another plan that a gate names: where it
// stands and its climb there, from the record of this daemon's store when
// it drives that plan, else from the plan's status file in Git (another
// daemon's). Found is false when neither has it.
type Peer struct {
	Plan     string          `json:"plan"`
	Found    bool            `json:"found"`
	Position plan.Position   `json:"position"`
	Status   string          `json:"status,omitempty"`
	Reached  []store.Reached `json:"reached,omitempty"`
	// Source says where this came from: "record" or "status file".
	Source string `json:"source,omitempty"`
	// Order is the peer's plan, when known, to order its positions; nil
	// when only its status file is.
	Order *plan.Plan `json:"-"`
}

// GateState is a gate judged at a time.
type GateState struct {
	plan.PlanGate `yaml:",inline"`
	Open          bool `json:"open" yaml:"open"`
	// Since is since when the other plan has held the position, when it
	// does; OpensAt when the gate opens if it goes on holding it.
	Since   time.Time `json:"since,omitzero" yaml:"since,omitempty"`
	OpensAt time.Time `json:"opensAt,omitzero" yaml:"opensAt,omitempty"`
	Reason  string    `json:"reason" yaml:"reason"`
}

// JudgeGate says whether g is open at now given what is known of the plan
// it names. It reads no clock.
func JudgeGate(g plan.PlanGate, peer Peer, now time.Time) GateState {
	st := GateState{PlanGate: g}
	want := g.Position()
	switch {
	case !peer.Found:
		st.Reason = fmt.Sprintf("waiting for %s: no record or status file of that plan yet", g.Gate)
		return st
	case peer.Status == StatusBreached || peer.Status == StatusFrozen:
		st.Reason = fmt.Sprintf("waiting for %s: it is %s at %s", g.Gate, peer.Status, peer.Position)
		return st
	}
	// The first position of its climb at or above the one asked for.
	for _, r := range peer.Reached {
		if atOrAbove(peer.Order, r.Position, want) {
			st.Since = r.At
			break
		}
	}
	if st.Since.IsZero() {
		st.Reason = fmt.Sprintf("waiting for %s: it stands at %s", g.Gate, peer.Position)
		return st
	}
	st.OpensAt = st.Since.Add(g.For.Std())
	if now.Before(st.OpensAt) {
		// Worded without the time held so far, so that the reason, which
		// is recorded and committed, does not change at every cycle.
		st.Reason = fmt.Sprintf("waiting for %s: held since %s, until %s", g.Gate, st.Since.UTC().Format(time.RFC3339), st.OpensAt.UTC().Format(time.RFC3339))
		return st
	}
	st.Open = true
	st.Reason = fmt.Sprintf("%s: reached %s at %s", g.Gate, peer.Position, st.Since.UTC().Format(time.RFC3339))
	return st
}

// atOrAbove reports whether pos is at or above want, in the order of p
// when known; else by phase name (the same phase at a share at least
// want's), which is all a status file tells.
func atOrAbove(p *plan.Plan, pos, want plan.Position) bool {
	if p != nil && p.PhaseIndex(want.Phase) >= 0 {
		return p.Compare(pos, want) >= 0
	}
	return pos.Phase == want.Phase && pos.Percentage >= want.Percentage
}

// Climb returns reached, the climb of a migration, after it entered to at
// at: cut to the positions at or below to, with to added unless it is the
// last already or start.
func Climb(p *plan.Plan, reached []store.Reached, to plan.Position, at time.Time) []store.Reached {
	var out []store.Reached
	for _, r := range reached {
		if !r.Position.IsStart() && p.Compare(r.Position, to) <= 0 {
			out = append(out, r)
		}
	}
	if !to.IsStart() && (len(out) == 0 || out[len(out)-1].Position != to) {
		out = append(out, store.Reached{Position: to, At: at})
	}
	return out
}

// gates judges the gates a move from cur to next has to pass, returning
// them all and whether every one is open.
func gates(d *Desired, o Observed, cur, next plan.Position, now time.Time) ([]GateState, bool) {
	gs := d.Plan.GatesBefore(cur, next)
	if len(gs) == 0 {
		return nil, true
	}
	out := make([]GateState, 0, len(gs))
	open := true
	for _, g := range gs {
		peer := o.Peers[g.Plan]
		peer.Plan = g.Plan
		st := JudgeGate(g, peer, now)
		open = open && st.Open
		out = append(out, st)
	}
	return out, open
}
