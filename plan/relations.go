package plan

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// This file holds what relates plans to each other: lockstep groups
// (spec.group) and gates (after). A plan alone is checked by checkRules;
// these rules need every plan of a set.

// relationPaths are the fields of p that Relations may point at, beyond
// keptPositions: its group, its gates and its phases' names.
func (p *Plan) relationPaths() []string {
	paths := []string{"spec.group", "spec.promotion", "spec.after", "spec.phases"}
	gate := func(prefix string, gates []Gate) {
		for i := range gates {
			for _, f := range []string{"", ".plan", ".reached", ".percentage"} {
				paths = append(paths, fmt.Sprintf("%s.%d%s", prefix, i, f))
			}
		}
	}
	gate("spec.after", p.Spec.After)
	for i, ph := range p.Spec.Phases {
		paths = append(paths, fmt.Sprintf("spec.phases.%d.name", i))
		gate(fmt.Sprintf("spec.phases.%d.after", i), ph.After)
	}
	return paths
}

// PlanGate is one gate of a plan, with where it stands in the plan: Phase
// is the phase it guards the entry of, "" for a gate on leaving start
// (spec.after), and Path the gate's field path.
type PlanGate struct {
	Gate  `yaml:",inline"`
	Phase string `json:"phase,omitempty" yaml:"phase,omitempty"`
	Path  string `json:"path" yaml:"path"`
}

// Gates returns every gate of p: spec.after first, then each phase's in
// order.
func (p *Plan) Gates() []PlanGate {
	var out []PlanGate
	for i, g := range p.Spec.After {
		out = append(out, PlanGate{Gate: g, Path: fmt.Sprintf("spec.after.%d", i)})
	}
	for i, ph := range p.Spec.Phases {
		for j, g := range ph.After {
			out = append(out, PlanGate{Gate: g, Phase: ph.Name, Path: fmt.Sprintf("spec.phases.%d.after.%d", i, j)})
		}
	}
	return out
}

// GatesBefore returns the gates a move from position from to the step to
// has to pass: spec.after when it leaves start, and the gates of to's phase
// when it enters that phase.
func (p *Plan) GatesBefore(from, to Position) []PlanGate {
	var out []PlanGate
	for _, g := range p.Gates() {
		switch {
		case g.Phase == "" && from.IsStart():
			out = append(out, g)
		case g.Phase != "" && g.Phase == to.Phase && from.Phase != to.Phase:
			out = append(out, g)
		}
	}
	return out
}

// errorAt is an error at a field of p, with the position it remembers.
func (p *Plan) errorAt(path, format string, args ...any) Error {
	line, col := p.Locate(path)
	return Error{File: p.File, Line: line, Column: col, Path: path, Message: fmt.Sprintf(format, args...)}
}

// Lockstep is how the members of a group line up: the members, sorted by
// name, and for each step of the group (an index into every member's
// timeline), each member's position there.
type Lockstep struct {
	Group   string   `json:"group" yaml:"group"`
	Members []string `json:"members" yaml:"members"`
	// Steps[i][j] is member j's position at the group's step i.
	Steps [][]Position `json:"steps" yaml:"steps"`
}

// Groups returns the lockstep groups of plans, by name, each with its
// members sorted by name. A plan without a group is in none.
func Groups(plans []*Plan) map[string][]*Plan {
	out := map[string][]*Plan{}
	for _, p := range plans {
		if g := p.Spec.Group; g != "" {
			out[g] = append(out[g], p)
		}
	}
	for _, ms := range out {
		slices.SortFunc(ms, func(a, b *Plan) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	}
	return out
}

// LineUp says how the members of one group line up step by step. Members
// line up when they have the same phases, by name and kind, in the same
// order, and the same number of steps in each: the percentages may differ,
// the group's i-th step is every member's i-th. It returns an error for
// each member that does not line up with the first (by name).
func LineUp(group string, members []*Plan) (Lockstep, Errors) {
	ls := Lockstep{Group: group}
	if len(members) == 0 {
		return ls, nil
	}
	first := members[0]
	shape := func(p *Plan) string {
		var parts []string
		for i, ph := range p.Spec.Phases {
			n := len(p.phaseSteps(i, -1))
			if ph.Kind() != PhaseSteps {
				n = 1
			}
			parts = append(parts, fmt.Sprintf("%s (%s, %d %s)", ph.Name, ph.Kind(), n, plural(n, "step", "steps")))
		}
		return strings.Join(parts, ", ")
	}
	want := shape(first)
	var errs Errors
	var lined []*Plan
	for _, m := range members {
		if m != first && shape(m) != want {
			errs = append(errs, m.errorAt("spec.phases",
				"the phases of group %q do not line up: member %s has %s, member %s has %s (expected the same phases, in the same order, with as many steps each; the percentages may differ)",
				group, m.Metadata.Name, shape(m), first.Metadata.Name, want))
			continue
		}
		lined = append(lined, m)
	}
	for _, m := range lined {
		ls.Members = append(ls.Members, m.Metadata.Name)
	}
	for j, m := range lined {
		for i, s := range m.Timeline(Last) {
			if j == 0 {
				ls.Steps = append(ls.Steps, make([]Position, len(lined)))
			}
			if i < len(ls.Steps) {
				ls.Steps[i][j] = s.Position
			}
		}
	}
	return ls, errs
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// String writes the mapping of a group's steps, one line per step:
// "3  canary: substrate 10%, protocol 5%".
func (ls Lockstep) String() string {
	var b strings.Builder
	for i, row := range ls.Steps {
		fmt.Fprintf(&b, "%d  %s:", i+1, row[0].Phase)
		for j, pos := range row {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %d%%", ls.Members[j], pos.Percentage)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Relations checks what relates the plans of a set: the members of each
// group line up, a gate names another plan (when known, a phase it has
// and a percentage within it), and no plans wait on each other in a cycle.
// A gate naming a plan that is not in plans is no error here: it may be
// followed by another daemon sharing the repository (see Unknown).
func Relations(plans []*Plan) Errors {
	var errs Errors
	byName := make(map[string]*Plan, len(plans))
	for _, p := range plans {
		byName[p.Metadata.Name] = p
	}
	groups := Groups(plans)
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		_, e := LineUp(name, groups[name])
		errs = append(errs, e...)
	}
	for _, p := range plans {
		for _, g := range p.Gates() {
			switch other := byName[g.Plan]; {
			case g.Plan == p.Metadata.Name:
				errs = append(errs, p.errorAt(g.Path+".plan", "a plan cannot wait on itself (expected another plan's name)"))
			case other == nil:
			case p.Spec.Group != "" && other.Spec.Group == p.Spec.Group:
				errs = append(errs, p.errorAt(g.Path+".plan", "plan %s is a member of group %s too, and members move together (expected a plan outside the group)", g.Plan, p.Spec.Group))
			case other.PhaseIndex(g.Reached) < 0:
				errs = append(errs, p.errorAt(g.Path+".reached", "plan %s has no phase %q (expected one of %s)", g.Plan, g.Reached, strings.Join(phaseNames(other), ", ")))
			case g.Percentage != nil:
				i := other.PhaseIndex(g.Reached)
				steps := other.phaseSteps(i, -1)
				lo, hi := other.TrafficBefore(i), 0
				if len(steps) > 0 {
					hi = steps[len(steps)-1]
				}
				if len(steps) == 0 || *g.Percentage < lo || *g.Percentage > hi {
					errs = append(errs, p.errorAt(g.Path+".percentage", "%d is outside phase %q of plan %s (expected %d..%d)", *g.Percentage, g.Reached, g.Plan, lo, hi))
				}
			}
		}
	}
	errs = append(errs, cycles(plans, byName)...)
	return errs.sort()
}

// Unknown returns an error for every gate that names a plan not in plans:
// `plan vet` over the whole repository finds a misspelt name so.
func Unknown(plans []*Plan) Errors {
	names := make([]string, len(plans))
	for i, p := range plans {
		names[i] = p.Metadata.Name
	}
	return unknown(plans, names)
}

// unknown returns an error for every gate of plans naming none of names.
func unknown(plans []*Plan, names []string) Errors {
	names = slices.Sorted(slices.Values(names))
	var errs Errors
	for _, p := range plans {
		for _, g := range p.Gates() {
			if !slices.Contains(names, g.Plan) {
				errs = append(errs, p.errorAt(g.Path+".plan", "unknown plan %q (expected %s)", g.Plan, oneOf("a plan of the repository", names)))
			}
		}
	}
	return errs.sort()
}

func phaseNames(p *Plan) []string {
	out := make([]string, len(p.Spec.Phases))
	for i, ph := range p.Spec.Phases {
		out[i] = ph.Name
	}
	return out
}

// cycles finds plans that wait on each other, through gates or through a
// group (a member waits on every other member): none of them could start.
// Each cycle is reported once, at the gate that closes it.
func cycles(plans []*Plan, byName map[string]*Plan) Errors {
	type edge struct {
		to   string
		path string // the gate's field, "" for a group's tie
	}
	out := map[string][]edge{}
	for _, p := range plans {
		for _, g := range p.Gates() {
			other, ok := byName[g.Plan]
			if ok && g.Plan != p.Metadata.Name && (p.Spec.Group == "" || other.Spec.Group != p.Spec.Group) {
				out[p.Metadata.Name] = append(out[p.Metadata.Name], edge{g.Plan, g.Path})
			}
		}
	}
	// A group moves as one: a gate on a member holds them all.
	for _, ms := range Groups(plans) {
		for _, a := range ms {
			for _, b := range ms {
				if a != b {
					out[a.Metadata.Name] = append(out[a.Metadata.Name], edge{b.Metadata.Name, ""})
				}
			}
		}
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var via []edge // via[k] is the edge that led to stack[k]
	var errs Errors
	seen := map[string]bool{}
	var visit func(n string, in edge)
	visit = func(n string, in edge) {
		color[n] = grey
		stack, via = append(stack, n), append(via, in)
		for _, e := range out[n] {
			switch color[e.to] {
			case white:
				visit(e.to, edge{to: n, path: e.path})
			case grey:
				i := slices.Index(stack, e.to)
				// The edges of the loop, each with the plan it leaves.
				type hop struct{ from, path string }
				var hops []hop
				for k := i + 1; k < len(stack); k++ {
					hops = append(hops, hop{via[k].to, via[k].path})
				}
				hops = append(hops, hop{n, e.path})
				gate := -1
				for k, h := range hops {
					if h.path != "" {
						gate = k
						break
					}
				}
				if gate < 0 {
					continue // members of one group: they move together
				}
				loop := append(slices.Clone(stack[i:]), e.to)
				key := strings.Join(slices.Sorted(slices.Values(loop[:len(loop)-1])), ",")
				if !seen[key] {
					seen[key] = true
					h := hops[gate]
					errs = append(errs, byName[h.from].errorAt(h.path+".plan", "plans wait on each other in a cycle: %s (expected gates that lead back to no plan; members of a group count as one)", strings.Join(loop, " → ")))
				}
			}
		}
		stack, via = stack[:len(stack)-1], via[:len(via)-1]
		color[n] = black
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		if color[name] == white {
			visit(name, edge{})
		}
	}
	return errs
}

// RequireKnown adds to the set an error for every gate naming a plan that
// is not in it (Unknown), for a check over every plan there is.
func (s *Set) RequireKnown() {
	// A plan whose file is broken is known all the same: its own
	// errors say what is wrong with it.
	errs := unknown(s.related, s.claimed)
	if len(errs) == 0 {
		return
	}
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.File] = true
	}
	s.Plans = slices.DeleteFunc(s.Plans, func(p *Plan) bool { return bad[p.File] })
	s.Errors = append(s.Errors, errs...).sort()
}
