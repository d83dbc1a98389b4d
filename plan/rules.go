package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ruleError is a violation of a rule that relates several fields.
type ruleError struct {
	path []string
	msg  string
	// deps are the fields the rule read to reach its verdict. When the
	// schema rejected one of them, the verdict rests on a value the plan
	// does not really have, so it is not reported.
	deps []dep
}

// dep names a field a rule depends on: the field itself and every field
// enclosing it, and with subtree also every field inside it. A "*" segment
// stands for any key or index.
type dep struct {
	path    []string
	subtree bool
}

func at(path string, args ...any) []string {
	return strings.Split(fmt.Sprintf(path, args...), ".")
}

func field(path string, args ...any) dep { return dep{at(path, args...), false} }
func tree(path string, args ...any) dep  { return dep{at(path, args...), true} }

// phasesUpTo is a dependency on every phase up to and including i: where
// traffic stands at phase i depends on all of them.
func phasesUpTo(i int) []dep {
	deps := make([]dep, 0, i+1)
	for j := 0; j <= i; j++ {
		deps = append(deps, tree("spec.phases.%d", j))
	}
	return deps
}

// checkRules applies the rules CUE cannot say cleanly. It is pure: it reads
// the plan and returns what is wrong, in no particular order. It also runs on
// plans the schema rejected, decoded as far as they go (see salvage), so it
// must not assume anything the schema guarantees; each error says which
// fields it read, and the caller drops those that read a rejected one.
func checkRules(p *Plan) []ruleError {
	var errs []ruleError
	add := func(path []string, deps []dep, format string, args ...any) {
		errs = append(errs, ruleError{path, fmt.Sprintf(format, args...), deps})
	}
	phases := p.Spec.Phases
	names := make([]string, 0, len(phases))
	for _, ph := range phases {
		if !slices.Contains(names, ph.Name) {
			names = append(names, ph.Name)
		}
	}
	phaseNames := tree("spec.phases.*.name")

	// The target names a phase, and its percentage lies within that phase.
	t := p.Spec.Target
	ti := p.PhaseIndex(t.Phase)
	switch {
	case ti < 0:
		add(at("spec.target.phase"), []dep{phaseNames}, "unknown phase %q (expected one of %s)", t.Phase, strings.Join(names, ", "))
	case t.Percentage != nil:
		ph := phases[ti]
		lo := p.TrafficBefore(ti)
		deps := append(phasesUpTo(ti), tree("spec.target"))
		switch {
		case len(ph.Steps) == 0:
			add(at("spec.target.percentage"), deps, "phase %q has no steps (expected no percentage for a %s phase)", ph.Name, ph.Kind())
		case *t.Percentage > ph.Steps[len(ph.Steps)-1] || *t.Percentage < lo:
			add(at("spec.target.percentage"), deps, "%d is outside phase %q (expected %d..%d)", *t.Percentage, ph.Name, lo, ph.Steps[len(ph.Steps)-1])
		}
	}

	// Traffic never decreases from one phase to the next.
	for i, ph := range phases {
		before := p.TrafficBefore(i)
		switch ph.Kind() {
		case PhaseSteps:
			if len(ph.Steps) > 0 && ph.Steps[0] < before {
				add(at("spec.phases.%d.steps.0", i), phasesUpTo(i), "%d would lower traffic from the %d%% the phases before reach (expected at least %d)", ph.Steps[0], before, before)
			}
		case PhaseMirror:
			switch {
			case !p.Spec.Driver.Routed():
				add(at("spec.phases.%d.mirror", i), []dep{tree("spec.driver")}, "mirroring needs a router to copy requests (expected spec.driver.%s.traffic)", p.Spec.Driver.Name())
			case !p.Spec.Driver.Mirrors():
				add(at("spec.phases.%d.mirror", i), []dep{tree("spec.driver")}, "HAProxy cannot copy requests (expected spec.driver.docker.traffic.nginx for a plan with a mirror phase)")
			}
			if before > 0 {
				add(at("spec.phases.%d.mirror", i), phasesUpTo(i), "a mirror phase sends the candidate no live traffic, so it would lower traffic from %d%% to 0 (expected mirror phases before any phase with steps)", before)
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
				add(at("spec.phases.%d.verify.%d", i, j), []dep{field("spec.verify")}, "unknown check %q (expected %s)", name, oneOf("a name from spec.verify", checks))
			}
		}
		if ph.Checkpoint != "" {
			if first, ok := checkpoints[ph.Checkpoint]; ok {
				add(at("spec.phases.%d.checkpoint", i), []dep{tree("spec.phases.%d.checkpoint", first)}, "duplicate checkpoint name %q (first used by spec.phases.%d)", ph.Checkpoint, first)
			} else {
				checkpoints[ph.Checkpoint] = i
			}
		}
		if ph.Decommission != nil {
			if end := p.phaseSteps(i, -1); len(end) > 0 && end[len(end)-1] != 100 {
				add(at("spec.phases.%d.decommission", i), phasesUpTo(i), "decommissioning stable needs the candidate at 100%% (expected a phase ending at 100, this one ends at %d)", end[len(end)-1])
			}
		}
	}
	// A job runs under a ServiceAccount only on Kubernetes.
	if drv := p.Spec.Driver.Name(); drv == "docker" {
		serviceAccount := func(path string, r *Run) {
			if r != nil && r.ServiceAccountName != "" {
				add(at("%s.serviceAccountName", path), []dep{tree("spec.driver")}, "a job runs as a ServiceAccount only on Kubernetes (expected no serviceAccountName with the %s driver)", drv)
			}
		}
		for i, ph := range phases {
			serviceAccount(fmt.Sprintf("spec.phases.%d.run", i), ph.Run)
		}
		for _, name := range checks {
			serviceAccount("spec.verify."+name+".run", p.Spec.Verify[name].Run)
		}
	}
	for i, g := range p.Spec.Guardrails {
		if g.Compare != nil {
			for _, e := range compareRules(g) {
				add(at("spec.guardrails.%d.%s", i, e.field), []dep{tree("spec.guardrails.%d", i)}, "%s", e.msg)
			}
		}
	}
	if to := p.Spec.Rollback.To; to != "" && to != RollbackPreviousStep && to != RollbackStart && p.PhaseIndex(to) < 0 {
		add(at("spec.rollback.to"), []dep{phaseNames}, "unknown phase %q (expected previous-step, start or one of %s)", to, strings.Join(names, ", "))
	}
	return errs
}

// rejection is a field the schema rejected, and what that means for the
// value salvage decoded there.
type rejection struct {
	path []string
	// kept: a name, decoded as written; rules may read it.
	kept bool
	// whole: a mapping judged as a whole ("a phase needs one of steps,
	// mirror or run"); the fields inside it were decoded as written, the
	// mapping itself is in doubt.
	whole bool
}

// tainted reports whether the rule is about a field the schema rejected, or
// read a value in doubt.
func (r ruleError) tainted(rejected []rejection) bool {
	for _, bad := range rejected {
		if (dep{r.path, true}).covers(bad.path) {
			return true
		}
		if bad.kept {
			continue
		}
		for _, d := range r.deps {
			if d.covers(bad.path) && (!bad.whole || len(d.path) <= len(bad.path)) {
				return true
			}
		}
	}
	return false
}

// covers reports whether path is the field d names, a field enclosing it,
// or, for a subtree, a field inside it.
func (d dep) covers(path []string) bool {
	if len(path) > len(d.path) && !d.subtree {
		return false
	}
	for i := range min(len(d.path), len(path)) {
		if d.path[i] != "*" && d.path[i] != path[i] {
			return false
		}
	}
	return true
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

// fieldError is what is wrong with a field, relative to the struct that
// holds it.
type fieldError struct{ field, msg string }

// compareRules checks that a guardrail's comparison says one thing: its
// direction agrees with its tolerance, it has a tolerance or a test, the
// test's settings come with a test, and a query measures each side.
func compareRules(g Guardrail) []fieldError {
	c := *g.Compare
	var errs []fieldError
	switch {
	case c.Better == Higher && c.MaxIncrease != nil:
		errs = append(errs, fieldError{"compare.maxIncrease", "better: higher wants the candidate no lower than stable (expected maxDecrease)"})
	case c.Better == Lower && c.MaxDecrease != nil:
		errs = append(errs, fieldError{"compare.maxDecrease", "better: lower wants the candidate no higher than stable (expected maxIncrease)"})
	}
	if c.MaxIncrease == nil && c.MaxDecrease == nil && c.MaxDelta == nil && c.Test == "" {
		errs = append(errs, fieldError{"compare", "a comparison needs a tolerance or a test (expected maxIncrease, maxDecrease, maxDelta or test)"})
	}
	if c.Test == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"confidence", c.Confidence != 0}, {"minEffect", c.MinEffect != nil}, {"window", c.Window != 0}, {"minSamples", c.MinSamples != 0}} {
			if f.set {
				errs = append(errs, fieldError{"compare." + f.name, f.name + " is a setting of the test (expected test: mann-whitney with it)"})
			}
		}
	}
	if g.Prometheus != nil && !strings.Contains(g.Prometheus.Query, SideVar) {
		errs = append(errs, fieldError{"prometheus.query", "a compared query is run once for each side and must say where the side goes (expected " + SideVar + ", as in version=\"" + SideVar + "\")"})
	}
	return errs
}
