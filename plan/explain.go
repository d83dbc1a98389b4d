package plan

import (
	"encoding/json"
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
	return e
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
