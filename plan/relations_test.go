package plan

import (
	"strings"
	"testing"
)

func relPlan(name, extra, phases string) Source {
	return Source{Path: name + ".yaml", Data: []byte(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: ` + name + `}
spec:
  target: {phase: canary}
  driver: {docker: {stable: {service: ` + name + `-old}, candidate: {service: ` + name + `-new}}}
` + extra + `
  phases:
` + phases)}
}

const twoPhases = `    - {name: canary, steps: [10, 50], soak: 1m}
    - {name: full, steps: [100]}
`

func TestRelations(t *testing.T) {
	v := newValidator(t)
	for _, tc := range []struct {
		name    string
		sources []Source
		want    []string // substrings of the errors, in order
	}{
		{"a group that lines up", []Source{
			relPlan("a", "  group: g", twoPhases),
			relPlan("b", "  group: g", "    - {name: canary, steps: [5, 25]}\n    - {name: full, steps: [100]}\n"),
		}, nil},
		{"a group that does not line up", []Source{
			relPlan("a", "  group: g", twoPhases),
			relPlan("b", "  group: g", "    - {name: canary, steps: [5, 25, 30]}\n    - {name: full, steps: [100]}\n"),
		}, []string{`b.yaml:8:3: spec.phases: the phases of group "g" do not line up: member b has canary (steps, 3 steps), full (steps, 1 step), member a has canary (steps, 2 steps)`}},
		{"gates", []Source{
			relPlan("a", "  after: [{plan: b, reached: nope}]", twoPhases),
			relPlan("b", "  after: [{plan: b, reached: full}]", twoPhases),
			relPlan("c", "  after: [{plan: a, reached: canary, percentage: 60}]", twoPhases),
		}, []string{
			`a.yaml:7:30: spec.after.0.reached: plan b has no phase "nope" (expected one of canary, full)`,
			`b.yaml:7:18: spec.after.0.plan: a plan cannot wait on itself`,
			`c.yaml:7:50: spec.after.0.percentage: 60 is outside phase "canary" of plan a (expected 0..50)`,
		}},
		{"a cycle", []Source{
			relPlan("a", "  after: [{plan: b, reached: full}]", twoPhases),
			relPlan("b", "", "    - {name: canary, steps: [10, 50]}\n    - name: full\n      steps: [100]\n      after: [{plan: a, reached: canary, for: 1h}]\n"),
		}, []string{`a.yaml:7:18: spec.after.0.plan: plans wait on each other in a cycle: a → b → a`}},
		{"a gate on a member of the same group", []Source{
			relPlan("a", "  group: g\n  after: [{plan: b, reached: full}]", twoPhases),
			relPlan("b", "  group: g", twoPhases),
		}, []string{`a.yaml:8:18: spec.after.0.plan: plan b is a member of group g too`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := v.Validate(tc.sources)
			set.RequireKnown()
			if len(set.Errors) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(set.Errors), len(tc.want), set.Errors)
			}
			for i, e := range set.Errors {
				if !strings.Contains(e.Error(), tc.want[i]) {
					t.Errorf("error %d:\n got %s\nwant %s", i, e.Error(), tc.want[i])
				}
			}
			if len(tc.want) == 0 && len(set.Plans) != len(tc.sources) {
				t.Errorf("%d plans valid, want %d", len(set.Plans), len(tc.sources))
			}
		})
	}
	// An unknown plan is an error only when the set is every plan there
	// is (plan vet): a daemon may follow a part of the repository.
	set := v.Validate([]Source{relPlan("a", "  after: [{plan: elsewhere, reached: full}]", twoPhases)})
	if len(set.Errors) != 0 || len(set.Plans) != 1 {
		t.Fatalf("a gate on a plan followed elsewhere: %v", set.Errors)
	}
	set.RequireKnown()
	if len(set.Errors) != 1 || !strings.Contains(set.Errors[0].Error(), `unknown plan "elsewhere" (expected one of "a")`) {
		t.Fatalf("plan vet: %v", set.Errors)
	}
}

func TestLineUp(t *testing.T) {
	v := newValidator(t)
	set := v.Validate([]Source{
		relPlan("a", "  group: g", twoPhases),
		relPlan("b", "  group: g", "    - {name: canary, steps: [5, 25]}\n    - {name: full, steps: [100]}\n"),
	})
	ls, errs := LineUp("g", Groups(set.Plans)["g"])
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := "1  canary: a 10%, b 5%\n2  canary: a 50%, b 25%\n3  full: a 100%, b 100%\n"
	if got := ls.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
