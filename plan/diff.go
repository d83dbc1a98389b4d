package plan

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Change is what a new version of one plan will make the daemon do.
type Change struct {
	Plan string `json:"plan" yaml:"plan"`
	File string `json:"file,omitempty" yaml:"file,omitempty"`
	// Status is added, removed, modified or unchanged.
	Status string `json:"status" yaml:"status"`
	// Move is advance, rollback or none: how the target moved.
	Move string    `json:"move" yaml:"move"`
	From *Position `json:"from,omitempty" yaml:"from,omitempty"`
	To   *Position `json:"to,omitempty" yaml:"to,omitempty"`
	// Steps are the steps the daemon takes, in order. Least is the least
	// time they need once the step at From has soaked: the soaks of every
	// step but the last (a rollback takes none).
	Steps []Step   `json:"steps,omitempty" yaml:"steps,omitempty"`
	Least Duration `json:"least" yaml:"least"`
	// NoReturn is the point of no return a rollback goes back past. Once
	// its phase has completed, the daemon moves back only that far and
	// holds there (Frozen), unless the move is Forced.
	NoReturn *Position `json:"noReturn,omitempty" yaml:"noReturn,omitempty"`
	// Forced is set when the plan carries the force-rollback annotation for
	// To, as `rollback --force` writes it: the daemon then goes past
	// NoReturn, restoring the checkpoint of its phase (Restore), if any.
	Forced  bool   `json:"forced,omitempty" yaml:"forced,omitempty"`
	Restore string `json:"restore,omitempty" yaml:"restore,omitempty"`
	// Edits are the changes to the plan other than its target.
	Edits []SectionChange `json:"edits,omitempty" yaml:"edits,omitempty"`
	// Group is the lockstep group the plan moves in. When its target
	// moved, Members are the group's other members, each with how its own
	// target moved in the same change, and Partial is set when some did
	// not move as this one did: the group goes on only as far as every
	// member's target.
	Group   string       `json:"group,omitempty" yaml:"group,omitempty"`
	Members []MemberMove `json:"members,omitempty" yaml:"members,omitempty"`
	Partial bool         `json:"partial,omitempty" yaml:"partial,omitempty"`
	// Dependants are the plans whose gates name this one: a change of it
	// may open or close them.
	Dependants []Dependant `json:"dependants,omitempty" yaml:"dependants,omitempty"`
}

// MemberMove is how the target of another member of a group moved in the
// same change.
type MemberMove struct {
	Plan string `json:"plan" yaml:"plan"`
	// Move is advance, rollback or none; Status as Change's.
	Move   string `json:"move" yaml:"move"`
	Status string `json:"status" yaml:"status"`
}

// Dependant is a plan with gates on a changed plan.
type Dependant struct {
	Plan string `json:"plan" yaml:"plan"`
	// Gates say what each gate waits for and where: "before leaving
	// start: shop at full for 1h".
	Gates []string `json:"gates" yaml:"gates"`
}

// SectionChange is one changed part of a plan (a guardrail, a phase, a
// flag…), as Compare reports it; FileEdit is what ApplyEdits writes.
type SectionChange struct {
	// Section is guardrail, phase, verify, feature, rollback, driver or
	// metadata.
	Section string `json:"section" yaml:"section"`
	Name    string `json:"name,omitempty" yaml:"name,omitempty"`
	// Kind is added, removed or changed.
	Kind   string `json:"kind" yaml:"kind"`
	Detail string `json:"detail,omitempty" yaml:"detail,omitempty"`
}

// Change statuses and moves.
const (
	StatusAdded     = "added"
	StatusRemoved   = "removed"
	StatusModified  = "modified"
	StatusUnchanged = "unchanged"

	MoveAdvance  = "advance"
	MoveRollback = "rollback"
	MoveNone     = "none"
)

// Compare matches the plans of base and head by name and says, for each,
// what the change will make the daemon do. Plans are returned sorted by name.
func Compare(base, head []*Plan) []Change {
	old := map[string]*Plan{}
	for _, p := range base {
		old[p.Metadata.Name] = p
	}
	seen := map[string]bool{}
	var out []Change
	for _, h := range head {
		name := h.Metadata.Name
		seen[name] = true
		out = append(out, compareOne(old[name], h))
	}
	for _, b := range base {
		if !seen[b.Metadata.Name] {
			from := b.TargetPosition()
			out = append(out, Change{Plan: b.Metadata.Name, File: b.File, Status: StatusRemoved, Move: MoveNone, From: &from})
		}
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Plan, b.Plan) })
	relate(out, base, head)
	return out
}

// relate fills in the group members and the dependants of each change: a
// plan's group and gates as head has them, or base for a removed plan.
func relate(changes []Change, base, head []*Plan) {
	plans := map[string]*Plan{}
	for _, p := range base {
		plans[p.Metadata.Name] = p
	}
	for _, p := range head {
		plans[p.Metadata.Name] = p
	}
	byPlan := map[string]*Change{}
	for i := range changes {
		byPlan[changes[i].Plan] = &changes[i]
	}
	for i := range changes {
		c := &changes[i]
		p := plans[c.Plan]
		if p == nil {
			continue
		}
		c.Group = p.Spec.Group
		if c.Group != "" && c.Move != MoveNone {
			for _, o := range changes {
				if o.Plan == c.Plan || plans[o.Plan] == nil || plans[o.Plan].Spec.Group != c.Group {
					continue
				}
				c.Members = append(c.Members, MemberMove{Plan: o.Plan, Move: o.Move, Status: o.Status})
				c.Partial = c.Partial || o.Move != c.Move
			}
		}
		if c.Status == StatusUnchanged {
			continue
		}
		for _, o := range head {
			if o.Metadata.Name == c.Plan || byPlan[o.Metadata.Name] == nil {
				continue
			}
			var gates []string
			for _, g := range o.Gates() {
				if g.Plan != c.Plan {
					continue
				}
				where := "before leaving start"
				if g.Phase != "" {
					where = "before " + g.Phase
				}
				gates = append(gates, where+": "+g.Gate.String())
			}
			if len(gates) > 0 {
				c.Dependants = append(c.Dependants, Dependant{Plan: o.Metadata.Name, Gates: gates})
			}
		}
	}
}

func compareOne(b, h *Plan) Change {
	to := h.TargetPosition()
	c := Change{Plan: h.Metadata.Name, File: h.File, To: &to}
	from := Start
	if b == nil {
		c.Status = StatusAdded
	} else {
		from = b.TargetPosition()
		if h.PhaseIndex(from.Phase) < 0 {
			// The old target's phase is gone; the daemon treats the
			// migration as not started in the new plan's terms.
			from = Start
		}
		c.Edits = edits(b, h)
	}
	c.From = &from
	switch h.Compare(to, from) {
	case 1:
		c.Move = MoveAdvance
	case -1:
		c.Move = MoveRollback
	default:
		c.Move = MoveNone
	}
	if c.Move != MoveNone {
		steps, least := h.Route(from, to)
		c.Steps, c.Least = steps, Duration(least)
	}
	if s, ok := h.PointOfNoReturn(from, to); ok {
		// The daemon does not go back past a completed irreversible
		// phase on a lowered target alone: it stops at its end.
		c.NoReturn = &s.Position
		c.Forced = h.Metadata.Annotations[ForceRollbackAnnotation] == to.String()
		if c.Forced {
			c.Restore = h.Spec.Phases[h.PhaseIndex(s.Phase)].Checkpoint
		} else {
			c.Steps = []Step{s}
		}
	}
	if c.Status == "" {
		if c.Move == MoveNone && len(c.Edits) == 0 {
			c.Status = StatusUnchanged
		} else {
			c.Status = StatusModified
		}
	}
	return c
}

// edits lists what changed between two versions of a plan, the target aside.
func edits(b, h *Plan) []SectionChange {
	var out []SectionChange
	named := func(section string, old, new map[string]any, describe func(name string) string) {
		for _, name := range slices.Sorted(maps.Keys(union(old, new))) {
			o, inOld := old[name]
			n, inNew := new[name]
			switch {
			case !inOld:
				detail := brief(n)
				if describe != nil {
					detail = describe(name)
				}
				out = append(out, SectionChange{Section: section, Name: name, Kind: "added", Detail: detail})
			case !inNew:
				out = append(out, SectionChange{Section: section, Name: name, Kind: "removed"})
			case !reflect.DeepEqual(o, n):
				out = append(out, SectionChange{Section: section, Name: name, Kind: "changed", Detail: fieldDiff(o, n)})
			}
		}
	}
	guardrail := func(name string) string {
		for _, g := range h.Spec.Guardrails {
			if g.Name == name {
				return g.Condition()
			}
		}
		return ""
	}
	named("guardrail", byName(b.Spec.Guardrails, func(g Guardrail) string { return g.Name }),
		byName(h.Spec.Guardrails, func(g Guardrail) string { return g.Name }), guardrail)
	named("phase", byName(b.Spec.Phases, func(p Phase) string { return p.Name }),
		byName(h.Spec.Phases, func(p Phase) string { return p.Name }), nil)
	if po, pn := phaseOrder(b), phaseOrder(h); po != pn && len(b.Spec.Phases) == len(h.Spec.Phases) {
		out = append(out, SectionChange{Section: "phase", Kind: "changed", Detail: "order " + po + " → " + pn})
	}
	named("verify", asAny(b.Spec.Verify), asAny(h.Spec.Verify), nil)
	named("feature", asAny(b.Spec.Features), asAny(h.Spec.Features), nil)
	for _, part := range []struct {
		section  string
		old, new any
	}{
		{"rollback", b.Spec.Rollback, h.Spec.Rollback},
		{"group", b.Spec.Group, h.Spec.Group},
		{"gates", b.Spec.After, h.Spec.After},
		{"promotion", b.Spec.Promotion, h.Spec.Promotion},
		{"driver", b.Spec.Driver, h.Spec.Driver},
		{"metadata", b.Metadata, h.Metadata},
	} {
		if o, n := plain(part.old), plain(part.new); !reflect.DeepEqual(o, n) {
			out = append(out, SectionChange{Section: part.section, Kind: "changed", Detail: fieldDiff(o, n)})
		}
	}
	return out
}

func phaseOrder(p *Plan) string {
	names := make([]string, len(p.Spec.Phases))
	for i, ph := range p.Spec.Phases {
		names[i] = ph.Name
	}
	return strings.Join(names, ", ")
}

func byName[T any](items []T, name func(T) string) map[string]any {
	m := make(map[string]any, len(items))
	for _, it := range items {
		m[name(it)] = plain(it)
	}
	return m
}

func asAny[T any](m map[string]T) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = plain(v)
	}
	return out
}

func union(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]any{}
	}
	maps.Copy(out, b)
	return out
}

// plain turns a value into JSON-shaped maps, lists and scalars, so that
// changes can be listed field by field.
func plain(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return string(b)
	}
	return out
}

// fieldDiff lists the fields that differ between two plain values, as
// "soak: 24h → 12h; steps: [5,10] → [5,20]".
func fieldDiff(o, n any) string {
	om, ok1 := o.(map[string]any)
	nm, ok2 := n.(map[string]any)
	if !ok1 || !ok2 {
		return brief(o) + " → " + brief(n)
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(union(om, nm))) {
		ov, inOld := om[k]
		nv, inNew := nm[k]
		switch {
		case !inOld:
			parts = append(parts, k+": "+brief(nv)+" (added)")
		case !inNew:
			parts = append(parts, k+": "+brief(ov)+" (removed)")
		case !reflect.DeepEqual(ov, nv):
			if _, isMap := ov.(map[string]any); isMap {
				parts = append(parts, k+"."+fieldDiff(ov, nv))
			} else {
				parts = append(parts, k+": "+brief(ov)+" → "+brief(nv))
			}
		}
	}
	return strings.Join(parts, "; ")
}

// brief renders a plain value compactly.
func brief(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return formatFloat(x)
	case nil:
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func itoa(n int) string { return strconv.Itoa(n) }
