package plan

import (
	"fmt"
	"strings"
	"testing"
)

func TestGatesBefore(t *testing.T) {
	v := newValidator(t)
	set := v.Validate([]Source{
		relPlan("a", "  after: [{plan: b, reached: canary, percentage: 50, for: 1h}, {plan: c, reached: full}]", `    - {name: shadow, steps: [1]}
    - {name: canary, steps: [10, 50], after: [{plan: b, reached: full}]}
    - name: full
      steps: [100]
      after: [{plan: c, reached: full, for: 30m}]
`),
	})
	if len(set.Errors) > 0 {
		t.Fatal(set.Errors)
	}
	p := set.Plans[0]
	var all []string
	for _, g := range p.Gates() {
		all = append(all, g.Path+"="+g.Phase+":"+g.Gate.String())
	}
	want := "spec.after.0=:b at canary 50% for 1h, spec.after.1=:c at full, spec.phases.1.after.0=canary:b at full, spec.phases.2.after.0=full:c at full for 30m"
	if got := strings.Join(all, ", "); got != want {
		t.Errorf("Gates:\n got %s\nwant %s", got, want)
	}
	paths := func(gs []PlanGate) string {
		var out []string
		for _, g := range gs {
			out = append(out, g.Path)
		}
		return fmt.Sprint(out)
	}
	for _, tc := range []struct {
		from, to Position
		want     string
	}{
		{Start, Position{Phase: "shadow", Percentage: 1}, "[spec.after.0 spec.after.1]"},
		{Start, Position{Phase: "canary", Percentage: 10}, "[spec.after.0 spec.after.1 spec.phases.1.after.0]"}, // leaving start straight into canary
		{Position{Phase: "shadow", Percentage: 1}, Position{Phase: "canary", Percentage: 10}, "[spec.phases.1.after.0]"},
		{Position{Phase: "canary", Percentage: 10}, Position{Phase: "canary", Percentage: 50}, "[]"},
		{Position{Phase: "canary", Percentage: 50}, Position{Phase: "full", Percentage: 100}, "[spec.phases.2.after.0]"},
		{Position{Phase: "full", Percentage: 100}, Position{Phase: "canary", Percentage: 50}, "[spec.phases.1.after.0]"}, // GatesBefore does not care for the direction
	} {
		if got := paths(p.GatesBefore(tc.from, tc.to)); got != tc.want {
			t.Errorf("GatesBefore(%s, %s) = %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
	if g := p.Gates()[0]; g.Position() != (Position{Phase: "canary", Percentage: 50}) || p.Gates()[1].Position() != (Position{Phase: "full"}) {
		t.Errorf("gate positions %v %v", g.Position(), p.Gates()[1].Position())
	}
}

func TestPromotion(t *testing.T) {
	v := newValidator(t)
	for _, tc := range []struct {
		policy   string
		promotes bool
		err      string
	}{
		{"", false, ""},
		{"manual", false, ""},
		{"auto", true, ""},
		{"pull-request", true, ""},
		{"sometimes", false, "spec.promotion"},
	} {
		extra := ""
		if tc.policy != "" {
			extra = "  promotion: " + tc.policy
		}
		set := v.Validate([]Source{relPlan("a", extra, twoPhases)})
		if tc.err != "" {
			if len(set.Errors) != 1 || !strings.Contains(set.Errors[0].Error(), tc.err) {
				t.Errorf("promotion %q: errors %v, want one at %s", tc.policy, set.Errors, tc.err)
			}
			continue
		}
		if len(set.Errors) > 0 {
			t.Fatalf("promotion %q: %v", tc.policy, set.Errors)
		}
		if got := set.Plans[0].Spec.Promotes(); got != tc.promotes {
			t.Errorf("promotion %q: Promotes() = %t", tc.policy, got)
		}
	}
}

func TestLineUpPhaseKinds(t *testing.T) {
	v := newValidator(t)
	// The same names and counts, but a run phase against a steps one:
	// they do not line up.
	set := v.Validate([]Source{
		relPlan("a", "  group: g", "    - {name: shadow, run: {image: m}}\n    - {name: canary, steps: [10]}\n"),
		relPlan("b", "  group: g", "    - {name: shadow, steps: [1]}\n    - {name: canary, steps: [10]}\n"),
	})
	if len(set.Errors) != 1 || !strings.Contains(set.Errors[0].Error(), "member b has shadow (steps, 1 step), canary (steps, 1 step), member a has shadow (run, 1 step)") {
		t.Fatalf("errors: %v", set.Errors)
	}
	// A group of three in name order, whatever the order given; one that
	// does not line up is left out of the mapping.
	set = v.Validate([]Source{
		relPlan("c", "  group: g", twoPhases),
		relPlan("a", "  group: g", twoPhases),
		relPlan("b", "  group: g", "    - {name: canary, steps: [20, 40]}\n    - {name: full, steps: [100]}\n"),
	})
	if len(set.Errors) > 0 {
		t.Fatal(set.Errors)
	}
	ls, errs := LineUp("g", Groups(set.Plans)["g"])
	if len(errs) > 0 || fmt.Sprint(ls.Members) != "[a b c]" || len(ls.Steps) != 3 || ls.Steps[1][1] != (Position{Phase: "canary", Percentage: 40}) {
		t.Errorf("line-up %+v %v", ls, errs)
	}
	ls, errs = LineUp("g", append(Groups(set.Plans)["g"], mustOne(t, v, relPlan("d", "  group: g", "    - {name: canary, steps: [5]}\n    - {name: full, steps: [100]}\n"))))
	if len(errs) != 1 || fmt.Sprint(ls.Members) != "[a b c]" {
		t.Errorf("with d that does not line up: %v %v", ls.Members, errs)
	}
}

func mustOne(t *testing.T, v *Validator, s Source) *Plan {
	t.Helper()
	p, err := v.ValidateOne(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
