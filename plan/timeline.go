package plan

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Position is a point of a migration: a phase and the share of live traffic
// the candidate receives there. The zero Position is Start, before the first
// phase, where stable takes all traffic.
type Position struct {
	Phase      string `json:"phase" yaml:"phase"`
	Percentage int    `json:"percentage" yaml:"percentage"`
}

// Start is the position before the first phase.
var Start = Position{}

// MarshalJSON writes Start with the phase "start", a name no phase may take.
func (p Position) MarshalJSON() ([]byte, error) {
	type plain Position
	if p.IsStart() {
		p.Phase = RollbackStart
	}
	return json.Marshal(plain(p))
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *Position) UnmarshalJSON(b []byte) error {
	type plain Position
	if err := json.Unmarshal(b, (*plain)(p)); err != nil {
		return err
	}
	if p.Phase == RollbackStart {
		p.Phase = ""
	}
	return nil
}

// MarshalYAML writes Start with the phase "start", as MarshalJSON does.
func (p Position) MarshalYAML() (any, error) {
	type plain Position
	if p.IsStart() {
		p.Phase = RollbackStart
	}
	return plain(p), nil
}

// IsStart reports whether p is Start.
func (p Position) IsStart() bool { return p.Phase == "" }

// String formats p as "canary 25%", or "start".
func (p Position) String() string {
	if p.IsStart() {
		return "start"
	}
	return fmt.Sprintf("%s %d%%", p.Phase, p.Percentage)
}

// ParsePosition reads a position as String writes it: "start" or
// "PHASE N%".
func ParsePosition(s string) (Position, error) {
	if s == RollbackStart {
		return Start, nil
	}
	phase, pct, ok := strings.Cut(s, " ")
	n, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
	if !ok || phase == "" || !strings.HasSuffix(pct, "%") || err != nil || n < 0 || n > 100 {
		return Position{}, fmt.Errorf("position %q: want start or PHASE N%%", s)
	}
	return Position{Phase: phase, Percentage: n}, nil
}

// PhaseIndex returns the index of the named phase, or -1.
func (p *Plan) PhaseIndex(name string) int {
	for i, ph := range p.Spec.Phases {
		if ph.Name == name {
			return i
		}
	}
	return -1
}

// Compare orders two positions of p: by phase order, then percentage. Start
// comes before every phase; a phase p does not declare sorts as Start.
func (p *Plan) Compare(a, b Position) int {
	ai, bi := p.PhaseIndex(a.Phase), p.PhaseIndex(b.Phase)
	switch {
	case ai != bi:
		return cmpInt(ai, bi)
	case ai < 0:
		return 0
	}
	return cmpInt(a.Percentage, b.Percentage)
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Step is one position of a plan's timeline and what the daemon does there.
type Step struct {
	Position `yaml:",inline"`
	// Index is the step's place in its timeline, from 0.
	Index int `json:"index" yaml:"index"`
	// Kind is the kind of the step's phase.
	Kind PhaseKind `json:"kind" yaml:"kind"`
	// Mirror is the share of requests copied to the candidate, responses
	// dropped.
	Mirror int `json:"mirror,omitempty" yaml:"mirror,omitempty"`
	// Checkpoint is the snapshot taken before entering the step (the first
	// step of a phase that declares one).
	Checkpoint string `json:"checkpoint,omitempty" yaml:"checkpoint,omitempty"`
	// Run is the job run to completion at this step.
	Run *Run `json:"run,omitempty" yaml:"run,omitempty"`
	// Soak is how long the step holds, guardrails green, before it is left.
	Soak Duration `json:"soak" yaml:"soak"`
	// Verify names the checks that must pass before the step is left.
	Verify []string `json:"verify,omitempty" yaml:"verify,omitempty"`
	// Irreversible marks the step that completes a point of no return.
	Irreversible bool `json:"irreversible,omitempty" yaml:"irreversible,omitempty"`
	// Decommission scales stable to zero once the step has held this long.
	Decommission *Duration `json:"decommission,omitempty" yaml:"decommission,omitempty"`
	// OnBreach is what a guardrail breach at this step does.
	OnBreach Breach `json:"onBreach" yaml:"onBreach"`
}

// stepFields is Step as it is written and read. Step cannot be encoded as
// it is: it embeds Position, whose MarshalJSON and MarshalYAML would be
// promoted and write the position alone.
type stepFields struct {
	Phase        string    `json:"phase" yaml:"phase"`
	Percentage   int       `json:"percentage" yaml:"percentage"`
	Index        int       `json:"index" yaml:"index"`
	Kind         PhaseKind `json:"kind" yaml:"kind"`
	Mirror       int       `json:"mirror,omitempty" yaml:"mirror,omitempty"`
	Checkpoint   string    `json:"checkpoint,omitempty" yaml:"checkpoint,omitempty"`
	Run          *Run      `json:"run,omitempty" yaml:"run,omitempty"`
	Soak         Duration  `json:"soak" yaml:"soak"`
	Verify       []string  `json:"verify,omitempty" yaml:"verify,omitempty"`
	Irreversible bool      `json:"irreversible,omitempty" yaml:"irreversible,omitempty"`
	Decommission *Duration `json:"decommission,omitempty" yaml:"decommission,omitempty"`
	OnBreach     Breach    `json:"onBreach" yaml:"onBreach"`
}

func (s Step) fields() stepFields {
	return stepFields{Phase: s.Phase, Percentage: s.Percentage, Index: s.Index, Kind: s.Kind, Mirror: s.Mirror,
		Checkpoint: s.Checkpoint, Run: s.Run, Soak: s.Soak, Verify: s.Verify, Irreversible: s.Irreversible,
		Decommission: s.Decommission, OnBreach: s.OnBreach}
}

// MarshalJSON writes the step with all its fields.
func (s Step) MarshalJSON() ([]byte, error) { return json.Marshal(s.fields()) }

// MarshalYAML writes the step with all its fields.
func (s Step) MarshalYAML() (any, error) { return s.fields(), nil }

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Step) UnmarshalJSON(b []byte) error {
	var f stepFields
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Step{Position: Position{Phase: f.Phase, Percentage: f.Percentage}, Index: f.Index, Kind: f.Kind, Mirror: f.Mirror,
		Checkpoint: f.Checkpoint, Run: f.Run, Soak: f.Soak, Verify: f.Verify, Irreversible: f.Irreversible,
		Decommission: f.Decommission, OnBreach: f.OnBreach}
	return nil
}

// Breach is the reaction to a guardrail breach at a step.
type Breach struct {
	// Action is "rollback", "freeze" (a point of no return has been passed)
	// or "hold" (automatic rollback is off).
	Action string `json:"action" yaml:"action"`
	// To is the position a rollback goes to.
	To *Position `json:"to,omitempty" yaml:"to,omitempty"`
}

// Breach actions.
const (
	BreachRollback = "rollback"
	BreachFreeze   = "freeze"
	BreachHold     = "hold"
)

// String says what happens on a breach.
func (b Breach) String() string {
	switch b.Action {
	case BreachRollback:
		return "roll back to " + b.To.String()
	case BreachFreeze:
		return "freeze (past a point of no return)"
	}
	return "hold (automatic rollback is off)"
}

// TrafficBefore returns the live traffic in force before phase i starts: the
// traffic of the last phase before it that sets traffic, 0 at the start.
func (p *Plan) TrafficBefore(i int) int {
	for j := i - 1; j >= 0; j-- {
		if steps := p.Spec.Phases[j].Steps; len(steps) > 0 {
			return steps[len(steps)-1]
		}
	}
	return 0
}

// phaseSteps returns the percentages phase i passes through, capped at
// limit when limit >= 0: the declared steps below the cap, then the cap.
func (p *Plan) phaseSteps(i, limit int) []int {
	ph := p.Spec.Phases[i]
	if len(ph.Steps) == 0 {
		return []int{p.TrafficBefore(i)}
	}
	if limit < 0 {
		return ph.Steps
	}
	var out []int
	for _, s := range ph.Steps {
		if s >= limit {
			break
		}
		out = append(out, s)
	}
	return append(out, limit)
}

// TargetPosition resolves spec.target: a missing percentage means the last
// step of the phase; a mirror or run phase holds the traffic before it.
func (p *Plan) TargetPosition() Position {
	i := p.PhaseIndex(p.Spec.Target.Phase)
	if i < 0 {
		return Start
	}
	if pct := p.Spec.Target.Percentage; pct != nil && len(p.Spec.Phases[i].Steps) > 0 {
		return Position{Phase: p.Spec.Target.Phase, Percentage: *pct}
	}
	steps := p.phaseSteps(i, -1)
	return Position{Phase: p.Spec.Target.Phase, Percentage: steps[len(steps)-1]}
}

// Timeline returns every step of the plan up to and including to, in order;
// the steps of to's phase are capped at to's percentage. Timeline(Last)
// covers the whole plan.
func (p *Plan) Timeline(to Position) []Step {
	last := p.PhaseIndex(to.Phase)
	if to == Last {
		last = len(p.Spec.Phases) - 1
	}
	var out []Step
	for i := 0; i <= last && i < len(p.Spec.Phases); i++ {
		ph := p.Spec.Phases[i]
		limit := -1
		if i == last && to != Last && len(ph.Steps) > 0 {
			limit = to.Percentage
		}
		pcts := p.phaseSteps(i, limit)
		// Only the phase's own last step completes it: a target inside
		// the phase caps the list, and its last item is then a waypoint
		// that neither passes a point of no return nor decommissions.
		all := p.phaseSteps(i, -1)
		end := all[len(all)-1]
		for j, pct := range pcts {
			s := Step{
				Position: Position{Phase: ph.Name, Percentage: pct},
				Index:    len(out),
				Kind:     ph.Kind(),
				Mirror:   ph.Mirror,
				Soak:     ph.Soak,
				Verify:   ph.Verify,
			}
			if j == 0 {
				s.Checkpoint = ph.Checkpoint
				s.Run = ph.Run
			}
			if j == len(pcts)-1 && pct == end {
				s.Irreversible = ph.Irreversible
				if ph.Decommission != nil {
					d := ph.Decommission.After
					s.Decommission = &d
				}
			}
			out = append(out, s)
		}
	}
	for i := range out {
		out[i].OnBreach = p.onBreach(out, i)
	}
	return out
}

// Last stands for the end of a plan in Timeline.
var Last = Position{Phase: "\x00last"}

// onBreach works out the reaction to a breach at steps[i].
func (p *Plan) onBreach(steps []Step, i int) Breach {
	if !p.Spec.Rollback.IsAutomatic() {
		return Breach{Action: BreachHold}
	}
	to := Start
	switch target := p.Spec.Rollback.Target(); target {
	case RollbackStart:
	case RollbackPreviousStep:
		if i > 0 {
			to = steps[i-1].Position
		}
	default:
		// A named phase: its first step, if that lies before this step.
		// At that step or before it there is no going back to the phase;
		// the previous step is then the nearest position behind, where
		// start would throw away progress the operator chose to keep (and,
		// after a point of no return, freeze what could roll back).
		named := false
		for _, s := range steps[:i] {
			if s.Phase == target {
				to, named = s.Position, true
				break
			}
		}
		if !named && i > 0 {
			to = steps[i-1].Position
		}
	}
	// A completed irreversible phase before this step is a point of no
	// return: a breach past it freezes in place rather than move back to
	// it or beyond, unless rollback.to names that phase itself.
	for j := i - 1; j >= 0; j-- {
		if steps[j].Irreversible {
			c := p.Compare(to, steps[j].Position)
			if c < 0 || c == 0 && p.Spec.Rollback.Target() != steps[j].Phase {
				return Breach{Action: BreachFreeze}
			}
			break
		}
	}
	return Breach{Action: BreachRollback, To: &to}
}

// Route returns the steps the daemon takes to go from one position to
// another, and the least time it needs. Forward, it passes every step after
// from up to to, holding each but the last for its soak; backward, it moves
// straight to to.
func (p *Plan) Route(from, to Position) (steps []Step, least time.Duration) {
	if p.Compare(to, from) < 0 {
		for _, s := range p.Timeline(to) {
			if s.Position == to {
				return []Step{s}, 0
			}
		}
		start := Step{Position: Start, OnBreach: Breach{Action: BreachHold}}
		return []Step{start}, 0
	}
	for _, s := range p.Timeline(to) {
		if p.Compare(s.Position, from) <= 0 {
			continue
		}
		steps = append(steps, s)
	}
	for _, s := range steps[:max(len(steps)-1, 0)] {
		least += s.Soak.Std()
	}
	return steps, least
}

// Resolve returns the position a target resolves to in p, as if it were
// spec.target.
func (p *Plan) Resolve(t Target) Position {
	q := *p
	q.Spec.Target = t
	return q.TargetPosition()
}

// TargetFor returns the spec.target that resolves to pos: the phase, with
// the percentage when the phase has steps. Start has no target of its own;
// the first phase stands for it, at 0% when it has steps: without a
// percentage it would mean the phase's last step, and a rollback to start
// committed so would send the next human commit up to it.
func (p *Plan) TargetFor(pos Position) Target {
	if pos.IsStart() && len(p.Spec.Phases) > 0 {
		t := Target{Phase: p.Spec.Phases[0].Name}
		if len(p.Spec.Phases[0].Steps) > 0 {
			zero := 0
			t.Percentage = &zero
		}
		return t
	}
	t := Target{Phase: pos.Phase}
	if i := p.PhaseIndex(pos.Phase); i >= 0 && len(p.Spec.Phases[i].Steps) > 0 {
		pct := pos.Percentage
		t.Percentage = &pct
	}
	return t
}

// StepBefore returns the last step of the whole timeline before pos.
func (p *Plan) StepBefore(pos Position) (Step, bool) {
	var prev Step
	found := false
	for _, s := range p.Timeline(Last) {
		if p.Compare(s.Position, pos) < 0 {
			prev, found = s, true
		}
	}
	return prev, found
}

// PointOfNoReturn returns the point of no return a move back from one
// position to another goes past: the step completing an irreversible phase
// that lies after to and at or before from. At from itself counts: with the
// migration there, the phase may have completed already.
func (p *Plan) PointOfNoReturn(from, to Position) (Step, bool) {
	if p.Compare(to, from) >= 0 {
		return Step{}, false
	}
	for _, s := range p.Timeline(Last) {
		if s.Irreversible && p.Compare(to, s.Position) < 0 && p.Compare(s.Position, from) <= 0 {
			return s, true
		}
	}
	return Step{}, false
}
