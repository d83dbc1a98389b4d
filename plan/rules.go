package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ruleError is a violation of a rule that relates several fields, found after
// the schema accepted the plan.
type ruleError struct {
	path []string
	msg  string
}

func at(path string, args ...any) []string {
	return strings.Split(fmt.Sprintf(path, args...), ".")
}

// checkRules applies the rules CUE cannot say cleanly. It is pure: it reads
// the plan and returns what is wrong, in no particular order. It also runs on
// plans the schema rejected, decoded as far as they go, so it must not assume
// anything the schema guarantees.
func checkRules(p *Plan) []ruleError {
	var errs []ruleError
	add := func(path []string, format string, args ...any) {
		errs = append(errs, ruleError{path, fmt.Sprintf(format, args...)})
	}
	phases := p.Spec.Phases
	names := make([]string, len(phases))
	for i, ph := range phases {
		names[i] = ph.Name
	}

	// The target names a phase, and its percentage lies within that phase.
	t := p.Spec.Target
	ti := p.PhaseIndex(t.Phase)
	switch {
	case ti < 0:
		add(at("spec.target.phase"), "unknown phase %q (expected one of %s)", t.Phase, strings.Join(names, ", "))
	case t.Percentage != nil:
		ph := phases[ti]
		lo := p.TrafficBefore(ti)
		switch {
		case len(ph.Steps) == 0:
			add(at("spec.target.percentage"), "phase %q has no steps (expected no percentage for a %s phase)", ph.Name, ph.Kind())
		case *t.Percentage > ph.Steps[len(ph.Steps)-1] || *t.Percentage < lo:
			add(at("spec.target.percentage"), "%d is outside phase %q (expected %d..%d)", *t.Percentage, ph.Name, lo, ph.Steps[len(ph.Steps)-1])
		}
	}

	// Traffic never decreases from one phase to the next.
	for i, ph := range phases {
		before := p.TrafficBefore(i)
		switch ph.Kind() {
		case PhaseSteps:
			if len(ph.Steps) > 0 && ph.Steps[0] < before {
				add(at("spec.phases.%d.steps.0", i), "%d would lower traffic from the %d%% the phases before reach (expected at least %d)", ph.Steps[0], before, before)
			}
		case PhaseMirror:
			if !p.Spec.Driver.Routed() {
				add(at("spec.phases.%d.mirror", i), "mirroring needs a router to copy requests (expected spec.driver.%s.traffic)", p.Spec.Driver.Name())
			}
			if before > 0 {
				add(at("spec.phases.%d.mirror", i), "a mirror phase sends the candidate no live traffic, so it would lower traffic from %d%% to 0 (expected mirror phases before any phase with steps)", before)
			}
		}
	}

	// Names that refer to other parts of the plan exist.
	checks := make([]string, 0, len(p.Spec.Verify))
	for name := range p.Spec.Verify {
		checks = append(checks, name)
	}
	slices.Sort(checks)
	checkpoints := map[string]int{}
	for i, ph := range phases {
		for j, name := range ph.Verify {
			if _, ok := p.Spec.Verify[name]; !ok {
				add(at("spec.phases.%d.verify.%d", i, j), "unknown check %q (expected %s)", name, oneOf("a name from spec.verify", checks))
			}
		}
		if ph.Checkpoint != "" {
			if first, ok := checkpoints[ph.Checkpoint]; ok {
				add(at("spec.phases.%d.checkpoint", i), "duplicate checkpoint name %q (first used by spec.phases.%d)", ph.Checkpoint, first)
			} else {
				checkpoints[ph.Checkpoint] = i
			}
		}
		if ph.Decommission != nil {
			end := p.phaseSteps(i, -1)
			if last := end[len(end)-1]; last != 100 {
				add(at("spec.phases.%d.decommission", i), "decommissioning stable needs the candidate at 100%% (expected a phase ending at 100, this one ends at %d)", last)
			}
		}
	}
	if to := p.Spec.Rollback.To; to != "" && to != RollbackPreviousStep && to != RollbackStart && p.PhaseIndex(to) < 0 {
		add(at("spec.rollback.to"), "unknown phase %q (expected previous-step, start or one of %s)", to, strings.Join(names, ", "))
	}
	return errs
}

// oneOf lists names for a message, or says there are none.
func oneOf(what string, names []string) string {
	if len(names) == 0 {
		return what + "; spec.verify declares none"
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	return "one of " + strings.Join(quoted, ", ")
}
