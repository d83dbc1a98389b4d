package reconcile

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hal9ai/hal9-migrate/plan"
)

// Member is one plan of a lockstep group as one step of the group sees
// it: what Decide made of it alone, on what it observed.
type Member struct {
	D *Desired
	O Observed
	A Action
}

// level is how far up its timeline a migration at pos stands: 0 at start,
// i+1 at the timeline's i-th step or a waypoint just past it. Members of a
// group line up step for step (plan.LineUp), so equal levels are the same
// step of the group.
func (d *Desired) level(pos plan.Position) int {
	n := 0
	for _, s := range d.timeline {
		if d.Plan.Compare(s.Position, pos) <= 0 {
			n++
		}
	}
	return n
}

// at returns the position of d's timeline at a level: start at 0.
func (d *Desired) at(level int) plan.Position {
	if level <= 0 || len(d.timeline) == 0 {
		return plan.Start
	}
	return d.timeline[min(level, len(d.timeline))-1].Position
}

// DecideGroup turns the actions Decide chose for each member of a group
// alone into the group's: members move as one. It reads no clock and
// calls nothing.
//
//   - A member rolled back, now or under the commit it follows, sets the
//     group's ceiling: every member above that level rolls back to it,
//     with a failure that names the member and what failed there. A crash
//     between the members' rollbacks is finished so after a restart.
//   - A member moves forward from a level only when every other member is
//     past it, or at it and moving forward in this same step: no member
//     gets more than one step ahead, and none leaves a step before every
//     member is ready to.
//   - A promotion is asked for only when every member asks for it.
func DecideGroup(group string, ms []Member) []Action {
	out := make([]Action, len(ms))
	for i, m := range ms {
		out[i] = m.A
	}
	if len(ms) < 2 {
		return out
	}
	lv := make([]int, len(ms))
	for i, m := range ms {
		lv[i] = m.D.level(m.O.Record.Position)
	}

	// The ceiling: the lowest level a member rolled back to.
	ceiling, by := -1, -1
	var cause *Failure
	for i, m := range ms {
		l := -1
		switch {
		case m.A.Kind == Rollback:
			l = m.D.level(m.A.To)
		case m.O.Record.Status == StatusRolledBack && m.O.Record.Commit == m.D.Commit && m.A.Kind == Wait:
			l = lv[i]
		}
		if l >= 0 && (ceiling < 0 || l < ceiling) {
			ceiling, by = l, i
			cause = m.A.Failure
			if cause == nil {
				cause = lastFailure(m)
			}
		}
	}
	if ceiling >= 0 {
		who := ms[by].D.Plan.Metadata.Name
		for i, m := range ms {
			if i == by || lv[i] <= ceiling || m.A.Kind == Rollback && m.D.level(m.A.To) <= ceiling {
				continue
			}
			if m.A.Kind == Apply && m.O.Record.Pending != nil || m.A.Kind == Freeze {
				continue // a move to finish first; a freeze holds
			}
			if m.O.DriverErr != nil {
				continue // out of sight: nothing changes; it follows once seen
			}
			f := Failure{What: fmt.Sprintf("member %s of group %s rolled back", who, group)}
			if cause != nil {
				f = *cause
				f.What = fmt.Sprintf("%s of group member %s", cause.What, who)
			}
			f.Member = who
			to := m.D.at(ceiling)
			if fl, ok := m.D.floor(m.O.Record); ok && m.D.Plan.Compare(to, fl) < 0 {
				out[i] = Action{Kind: Freeze, To: m.O.Record.Position, Failure: &f, Status: StatusFrozen,
					Reason: f.What + " at " + m.O.Record.Position.String() + "; past the point of no return: holding the position"}
				continue
			}
			out[i] = Action{Kind: Rollback, To: to, Target: m.D.targetOf(to, false), Failure: &f, Status: StatusRolledBack,
				Reason: fmt.Sprintf("%s; group %s moves as one: rolling back to %s", f.What, group, to)}
		}
		if out[by].Failure != nil && out[by].Failure.Member == "" {
			f := *out[by].Failure
			f.Member = who
			out[by].Failure = &f
		}
		// The others go on only in lockstep with the members rolled
		// back, where these now stand.
		for i, m := range ms {
			if out[i].Kind == Rollback {
				lv[i] = m.D.level(out[i].To)
			}
		}
	}

	// Forward, in lockstep.
	for i, m := range ms {
		a := out[i]
		if a.Kind != Advance && a.Kind != Promote {
			continue
		}
		if a.Kind == Advance && m.D.level(a.To) <= lv[i] {
			continue
		}
		var held []string
		for j, n := range ms {
			if j == i || lv[j] > lv[i] {
				continue
			}
			if lv[j] == lv[i] && out[j].Kind == a.Kind {
				continue
			}
			held = append(held, n.D.Plan.Metadata.Name+" ("+n.A.Reason+")")
		}
		if len(held) == 0 {
			continue
		}
		slices.Sort(held)
		out[i] = Action{Kind: Wait, Status: a.Status, Gates: a.Gates,
			Reason: fmt.Sprintf("ready to leave %s; group %s moves as one, waiting for %s", m.O.Record.Position, group, strings.Join(held, "; "))}
	}
	// An advance held back above frees no one, and a promotion needs every
	// member: undo those whose partner was held.
	for changed := true; changed; {
		changed = false
		for i, m := range ms {
			if out[i].Kind != Advance && out[i].Kind != Promote {
				continue
			}
			for j := range ms {
				if j != i && lv[j] == lv[i] && ms[j].A.Kind == out[i].Kind && out[j].Kind == Wait {
					out[i] = Action{Kind: Wait, Status: out[i].Status, Gates: out[i].Gates,
						Reason: fmt.Sprintf("ready to leave %s; group %s moves as one, waiting for %s (%s)", m.O.Record.Position, group, ms[j].D.Plan.Metadata.Name, out[j].Reason)}
					changed = true
					break
				}
			}
		}
	}
	return out
}

// lastFailure is the failure recorded of a member that rolled back under
// its commit, from its record.
func lastFailure(m Member) *Failure {
	f := m.O.Record.Failed
	if len(f) == 0 {
		return nil
	}
	return &Failure{What: f[len(f)-1].Reason}
}
