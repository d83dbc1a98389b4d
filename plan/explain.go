package plan

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Explanation is the timeline a plan follows, as `plan explain` shows it.
type Explanation struct {
	Plan   string   `json:"plan" yaml:"plan"`
	File   string   `json:"file,omitempty" yaml:"file,omitempty"`
	Driver string   `json:"driver" yaml:"driver"`
	Target Position `json:"target" yaml:"target"`
	// Steps are every step of the plan in order; the steps up to the target
	// come first, capped at the target's percentage.
	Steps []ExplainedStep `json:"steps" yaml:"steps"`
	// ToTarget is the least time from the start to the target: the soaks of
	// every step before it.
	ToTarget Duration `json:"toTarget" yaml:"toTarget"`
	// ToTargetJobTimeouts adds up the timeouts of the jobs run on the way
	// to the target, the target's own included: they take up to this much
	// more than ToTarget.
	ToTargetJobTimeouts Duration `json:"toTargetJobTimeouts,omitempty" yaml:"toTargetJobTimeouts,omitempty"`
	// Total is the least time to run the whole plan, decommission included.
	Total Duration `json:"total" yaml:"total"`
	// JobTimeouts adds up the timeouts of the plan's run phases: jobs take
	// up to this much more than Total.
	JobTimeouts Duration `json:"jobTimeouts,omitempty" yaml:"jobTimeouts,omitempty"`
	Guardrails  []string `json:"guardrails,omitempty" yaml:"guardrails,omitempty"`
	// Group is the lockstep group the plan moves in; Members are the
	// members known (the plans explained with it: ExplainAmong), the plan
	// included, and Lockstep how they line up, when more than one is.
	Group    string    `json:"group,omitempty" yaml:"group,omitempty"`
	Members  []string  `json:"members,omitempty" yaml:"members,omitempty"`
	Lockstep *Lockstep `json:"lockstep,omitempty" yaml:"lockstep,omitempty"`
	// Gates are the gates on other plans the migration waits on.
	Gates []PlanGate `json:"gates,omitempty" yaml:"gates,omitempty"`
	// Promotion is who moves the target on: manual, auto or pull-request.
	Promotion string `json:"promotion" yaml:"promotion"`
}

// ExplainedStep is a step and whether the current target reaches it.
type ExplainedStep struct {
	Step `yaml:",inline"`
	// BeyondTarget marks a step the daemon takes only after the target is
	// moved past it.
	BeyondTarget bool `json:"beyondTarget,omitempty" yaml:"beyondTarget,omitempty"`
}

// explainedFields is ExplainedStep as it is written. ExplainedStep cannot be
// encoded as it is: the MarshalJSON and MarshalYAML of the Step it embeds
// would be promoted and write the step without BeyondTarget.
type explainedFields struct {
	stepFields   `yaml:",inline"`
	BeyondTarget bool `json:"beyondTarget,omitempty" yaml:"beyondTarget,omitempty"`
}

// MarshalJSON writes the step with all its fields and BeyondTarget.
func (s ExplainedStep) MarshalJSON() ([]byte, error) {
	return json.Marshal(explainedFields{s.Step.fields(), s.BeyondTarget})
}

// MarshalYAML writes the step with all its fields and BeyondTarget.
func (s ExplainedStep) MarshalYAML() (any, error) {
	return explainedFields{s.Step.fields(), s.BeyondTarget}, nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *ExplainedStep) UnmarshalJSON(b []byte) error {
	var beyond struct {
		BeyondTarget bool `json:"beyondTarget"`
	}
	if err := json.Unmarshal(b, &beyond); err != nil {
		return err
	}
	s.BeyondTarget = beyond.BeyondTarget
	return s.Step.UnmarshalJSON(b)
}

// Explain works out the timeline of p.
func Explain(p *Plan) Explanation {
	target := p.TargetPosition()
	e := Explanation{Plan: p.Metadata.Name, File: p.File, Driver: p.Spec.Driver.Name(), Target: target}
	toTarget := p.Timeline(target)
	for _, s := range toTarget {
		e.Steps = append(e.Steps, ExplainedStep{Step: s})
		if s.Run != nil {
			e.ToTargetJobTimeouts += s.Run.Timeout
		}
	}
	_, least := p.Route(Start, target)
	e.ToTarget = Duration(least)

	all := p.Timeline(Last)
	for _, s := range all {
		if p.Compare(s.Position, target) > 0 {
			if s.Phase == target.Phase {
				// The phase started at the target (canary 0% of
				// [5, 10, 25]): its checkpoint is behind.
				s.Checkpoint = ""
			}
			s.Index = len(e.Steps)
			e.Steps = append(e.Steps, ExplainedStep{Step: s, BeyondTarget: true})
		}
	}
	var total time.Duration
	for i, s := range all {
		if i < len(all)-1 {
			total += s.Soak.Std()
		}
		if s.Decommission != nil {
			total += s.Decommission.Std()
		}
	}
	e.Total = Duration(total)
	for _, ph := range p.Spec.Phases {
		if ph.Run != nil {
			e.JobTimeouts += ph.Run.Timeout
		}
	}
	for _, g := range p.Spec.Guardrails {
		e.Guardrails = append(e.Guardrails, g.Describe())
	}
	e.Group = p.Spec.Group
	if e.Group != "" {
		e.Members = []string{p.Metadata.Name}
	}
	e.Gates = p.Gates()
	e.Promotion = p.Spec.Promotion
	if e.Promotion == "" {
		e.Promotion = PromotionManual
	}
	return e
}

// ExplainAmong explains p as Explain does, with the other members of its
// group found among plans (p's siblings: the plans of its directory) and,
// when there are any, how the members line up step by step.
func ExplainAmong(p *Plan, plans []*Plan) Explanation {
	e := Explain(p)
	if e.Group == "" {
		return e
	}
	members := Groups(append(slices.DeleteFunc(slices.Clone(plans), func(o *Plan) bool {
		return o.Metadata.Name == p.Metadata.Name
	}), p))[e.Group]
	if len(members) < 2 {
		return e
	}
	e.Members = nil
	for _, m := range members {
		e.Members = append(e.Members, m.Metadata.Name)
	}
	if ls, errs := LineUp(e.Group, members); len(errs) == 0 {
		e.Lockstep = &ls
	}
	return e
}

// DescribePromotion says what the promotion policy of e's plan does.
func (e Explanation) DescribePromotion() string {
	policy, name := e.Promotion, e.Plan
	if e.Group != "" {
		// A group is promoted as one, on one branch.
		name = "group-" + e.Group
	}
	switch policy {
	case PromotionAuto:
		return "auto: once the migration holds at its target, the daemon commits the next phase as the target, when that phase's gates are open"
	case PromotionPullRequest:
		return "pull-request: once the migration holds at its target, the daemon pushes the next phase as the target on branch hal9-migrate/promote/" + name + "-<phase> for a person to merge"
	}
	return "manual: a person moves spec.target on"
}

// Describe names the guardrail and says when it breaches.
func (g Guardrail) Describe() string { return g.Name + ": " + g.Condition() }

// Condition says in a few words when the guardrail breaches.
func (g Guardrail) Condition() string {
	var s string
	switch {
	case g.HTTP != nil:
		n := max(g.Failures, 1)
		s = g.HTTP.URL + " fails " + itoa(n) + " time"
		if n > 1 {
			s += "s"
		}
		s += " in a row"
	case g.Compare != nil:
		s = g.Compare.condition(g.what())
		if g.For > 0 {
			s += " for " + g.For.String()
		}
	default:
		// A value against its bounds: a Prometheus query, or any other
		// kind of source, named by its kind.
		s = g.what()
		if g.Max != nil {
			s += " > " + formatFloat(*g.Max)
		}
		if g.Min != nil {
			if g.Max != nil {
				s += " or"
			}
			s += " < " + formatFloat(*g.Min)
		}
		if g.For > 0 {
			s += " for " + g.For.String()
		}
	}
	if g.Settle > 0 {
		s += ", judged from " + g.Settle.String() + " after each move"
	}
	return s
}

// what names what a guardrail measures: "query", "cpu use", or its kind.
func (g Guardrail) what() string {
	switch {
	case g.Prometheus != nil:
		return "query"
	case g.Resources != nil:
		return g.Resources.Usage + " use %"
	}
	return g.Kind()
}

// condition says when a comparison of what breaches: "the candidate's
// query is more than 20% and 0.01 above stable's", "mann-whitney finds the
// candidate's query higher than stable's at 95% confidence, by 10% or
// more".
func (c Comparison) condition(what string) string {
	dir, worse := "above", "higher"
	if c.HigherIsBetter() {
		dir, worse = "below", "lower"
	}
	var tol []string
	if r := c.Relative(); r != nil {
		tol = append(tol, r.String())
	}
	if c.MaxDelta != nil {
		tol = append(tol, formatFloat(*c.MaxDelta))
	}
	of := "the candidate's " + what
	if c.PerShare {
		of += " per share of traffic"
	}
	var s string
	if c.Test != "" {
		s = c.Test + " finds " + of + " " + worse + " than stable's at " + Percent(c.TestConfidence()).String() + " confidence"
		if c.MinEffect != nil {
			s += ", by " + c.MinEffect.String() + " or more"
		}
		if len(tol) > 0 {
			s += ", and more than " + strings.Join(tol, " and ") + " " + dir
		}
		return s
	}
	if len(tol) == 0 {
		return of + " is " + worse + " than stable's"
	}
	return of + " is more than " + strings.Join(tol, " and ") + " " + dir + " stable's"
}
