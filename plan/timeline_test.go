package plan

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func loadBase(t *testing.T, edits ...string) *Plan {
	t.Helper()
	src := readBase(t)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(src, edits[i]) {
			t.Fatalf("base plan has no %q", edits[i])
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	p, err := newValidator(t).ValidateOne(Source{Path: "p.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func positions(steps []Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.Position.String()
	}
	return out
}

func TestTimelineCapsTheTargetPhase(t *testing.T) {
	p := loadBase(t, "steps: [5, 10, 25]", "steps: [5, 10, 25, 35]", "percentage: 10", "percentage: 20")
	if got, want := positions(p.Timeline(p.TargetPosition())), []string{"shadow 0%", "canary 5%", "canary 10%", "canary 20%"}; !reflect.DeepEqual(got, want) {
		t.Errorf("timeline to target = %v, want %v", got, want)
	}
	if got, want := positions(p.Timeline(Last)), []string{"shadow 0%", "canary 5%", "canary 10%", "canary 25%", "canary 35%", "migrate 35%", "full 100%"}; !reflect.DeepEqual(got, want) {
		t.Errorf("whole timeline = %v, want %v", got, want)
	}
	// A percentage equal to a step stops there; no percentage means the
	// phase's last step.
	p = loadBase(t, "    percentage: 10\n", "")
	if got := p.TargetPosition().String(); got != "canary 25%" {
		t.Errorf("target without percentage = %s", got)
	}
}

// TestCappedPhaseIsNotComplete: a target inside a phase makes its last
// step a waypoint; the phase's point of no return and decommission belong to
// its own last step only, or the engine would scale stable to zero with the
// candidate at 50%.
func TestCappedPhaseIsNotComplete(t *testing.T) {
	p := loadBase(t, "    phase: canary\n    percentage: 10", "    phase: full\n    percentage: 50", "steps: [100]", "steps: [50, 100]",
		"steps: [5, 10, 25]", "steps: [5, 10, 25]\n      irreversible: true")
	capped := p.Timeline(p.TargetPosition())
	if last := capped[len(capped)-1]; last.Position.String() != "full 50%" || last.Decommission != nil || last.Irreversible {
		t.Errorf("last step to the target: %+v, want full 50%% without decommission", last)
	}
	q := loadBase(t, "steps: [5, 10, 25]", "steps: [5, 10, 25]\n      irreversible: true")
	for _, s := range q.Timeline(q.TargetPosition()) {
		if s.Irreversible {
			t.Errorf("%s is a point of no return though canary stops at 10%% of 25%%", s.Position)
		}
	}
	all := p.Timeline(Last)
	if last := all[len(all)-1]; last.Decommission == nil {
		t.Errorf("the plan's last step lost its decommission: %+v", last)
	}
	for _, s := range all {
		if s.Irreversible != (s.Position.String() == "canary 25%" || s.Position.String() == "migrate 25%") {
			t.Errorf("%s: irreversible = %v", s.Position, s.Irreversible)
		}
	}
}

func TestStepDetails(t *testing.T) {
	p := loadBase(t)
	steps := p.Timeline(Last)
	byPos := map[string]Step{}
	for _, s := range steps {
		byPos[s.Position.String()] = s
	}
	if s := byPos["canary 5%"]; s.Checkpoint != "pre-canary" || s.Soak.Std() != 2*time.Hour {
		t.Errorf("canary 5%%: %+v", s)
	}
	if s := byPos["canary 10%"]; s.Checkpoint != "" {
		t.Errorf("checkpoint repeated on a later step: %+v", s)
	}
	if s := byPos["migrate 25%"]; s.Run == nil || s.Run.Image != "migrator:1" || !s.Irreversible || !reflect.DeepEqual(s.Verify, []string{"integrity"}) || s.Kind != PhaseRun {
		t.Errorf("run step: %+v", s)
	}
	if s := byPos["shadow 0%"]; s.Mirror != 100 || s.Kind != PhaseMirror {
		t.Errorf("mirror step: %+v", s)
	}
	if s := byPos["full 100%"]; s.Decommission == nil || s.Decommission.Std() != time.Hour {
		t.Errorf("full step: %+v", s)
	}
}

func TestOnBreach(t *testing.T) {
	tests := []struct {
		name  string
		edits []string
		want  []string // per step of the whole timeline
	}{
		{"previous step, frozen after the irreversible phase", nil, []string{
			"roll back to start", "roll back to shadow 0%", "roll back to canary 5%", "roll back to canary 10%",
			"roll back to canary 25%", "freeze (past a point of no return)"}},
		{"to start", []string{"to: previous-step", "to: start"}, []string{
			"roll back to start", "roll back to start", "roll back to start", "roll back to start", "roll back to start",
			"freeze (past a point of no return)"}},
		{"to a phase", []string{"to: previous-step", "to: canary"}, []string{
			"roll back to start", "roll back to shadow 0%", "roll back to canary 5%", "roll back to canary 5%", "roll back to canary 5%",
			"freeze (past a point of no return)"}},
		// A phase not behind the breach: the previous step, which after
		// the point of no return is the point itself, not a freeze.
		{"to a phase ahead", []string{"to: previous-step", "to: full"}, []string{
			"roll back to start", "roll back to shadow 0%", "roll back to canary 5%", "roll back to canary 10%",
			"roll back to canary 25%", "freeze (past a point of no return)"}},
		{"to the irreversible phase itself", []string{"to: previous-step", "to: migrate"}, []string{
			"roll back to start", "roll back to shadow 0%", "roll back to canary 5%", "roll back to canary 10%",
			"roll back to canary 25%", "roll back to migrate 25%"}},
		{"reversible run phase", []string{"to: previous-step", "to: start", "      irreversible: true\n", ""}, []string{
			"roll back to start", "roll back to start", "roll back to start", "roll back to start", "roll back to start", "roll back to start"}},
		{"automatic rollback off", []string{"    to: previous-step", "    automatic: false\n    to: previous-step"}, []string{
			"hold (automatic rollback is off)", "hold (automatic rollback is off)", "hold (automatic rollback is off)",
			"hold (automatic rollback is off)", "hold (automatic rollback is off)", "hold (automatic rollback is off)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadBase(t, tt.edits...)
			var got []string
			for _, s := range p.Timeline(Last) {
				got = append(got, s.OnBreach.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("on breach:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRoute(t *testing.T) {
	p := loadBase(t)
	canary5 := Position{Phase: "canary", Percentage: 5}
	full := Position{Phase: "full", Percentage: 100}

	steps, least := p.Route(Start, canary5)
	if got := positions(steps); !reflect.DeepEqual(got, []string{"shadow 0%", "canary 5%"}) || least != time.Hour {
		t.Errorf("start → canary 5%%: %v in %v", got, least)
	}
	steps, least = p.Route(canary5, full)
	if got := positions(steps); !reflect.DeepEqual(got, []string{"canary 10%", "canary 25%", "migrate 25%", "full 100%"}) || least != 4*time.Hour {
		// canary 10% and 25% soak 2h each; the run phase has no soak.
		t.Errorf("canary 5%% → full: %v in %v", got, least)
	}
	steps, least = p.Route(full, canary5)
	if got := positions(steps); !reflect.DeepEqual(got, []string{"canary 5%"}) || least != 0 {
		t.Errorf("backward: %v in %v", got, least)
	}
	steps, _ = p.Route(canary5, Start)
	if got := positions(steps); !reflect.DeepEqual(got, []string{"start"}) {
		t.Errorf("back to start: %v", got)
	}
	if steps, least := p.Route(canary5, canary5); len(steps) != 0 || least != 0 {
		t.Errorf("no move: %v in %v", positions(steps), least)
	}
}

func TestExplain(t *testing.T) {
	p := loadBase(t)
	e := Explain(p)
	if e.Target.String() != "canary 10%" || e.Driver != "kubernetes" {
		t.Errorf("target %v driver %s", e.Target, e.Driver)
	}
	var beyond []string
	for _, s := range e.Steps {
		if s.BeyondTarget {
			beyond = append(beyond, s.Position.String())
		}
	}
	if !reflect.DeepEqual(beyond, []string{"canary 25%", "migrate 25%", "full 100%"}) {
		t.Errorf("beyond target: %v", beyond)
	}
	// shadow 1h + canary 5% 2h before reaching canary 10%.
	if e.ToTarget.Std() != 3*time.Hour {
		t.Errorf("ToTarget = %v", e.ToTarget)
	}
	// 1h + 2h*3 (canary steps) + 0 (run) + 1h decommission.
	if e.Total.Std() != 8*time.Hour || e.JobTimeouts.Std() != 30*time.Minute {
		t.Errorf("Total = %v, JobTimeouts = %v", e.Total, e.JobTimeouts)
	}
	if want := []string{"errors: query > 0.05 for 5m", "health: http://shop-v2/health fails 3 times in a row"}; !reflect.DeepEqual(e.Guardrails, want) {
		t.Errorf("guardrails = %q", e.Guardrails)
	}
}

func TestCompare(t *testing.T) {
	base := loadBase(t)
	tests := []struct {
		name      string
		edits     []string
		move      string
		steps     []string
		least     time.Duration
		editsWant []string
	}{
		{"advance", []string{"percentage: 10", "percentage: 25"}, MoveAdvance, []string{"canary 25%"}, 0, nil},
		{"advance across phases", []string{"    phase: canary\n    percentage: 10", "    phase: full"}, MoveAdvance,
			[]string{"canary 25%", "migrate 25%", "full 100%"}, 2 * time.Hour, nil},
		{"rollback", []string{"    phase: canary\n    percentage: 10", "    phase: shadow"}, MoveRollback, []string{"shadow 0%"}, 0, nil},
		{"guardrail tightened", []string{"max: 0.05", "max: 0.01"}, MoveNone, nil, 0,
			[]string{"guardrail errors changed: max: 0.05 → 0.01"}},
		{"phase edited and guardrail added", []string{"soak: 2h", "soak: 30m", "  rollback:", "    - name: p99\n      prometheus: {query: p99}\n      max: 0.2\n  rollback:"}, MoveNone, nil, 0,
			[]string{"guardrail p99 added: query > 0.2", "phase canary changed: soak: 2h → 30m"}},
		{"feature flag", []string{"new_cart: 10", "new_cart: 50"}, MoveNone, nil, 0, []string{"feature new_cart changed: 10 → 50"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head := loadBase(t, tt.edits...)
			changes := Compare([]*Plan{base}, []*Plan{head})
			if len(changes) != 1 {
				t.Fatalf("%d changes", len(changes))
			}
			c := changes[0]
			if c.Move != tt.move || c.Status != StatusModified {
				t.Errorf("move %s status %s", c.Move, c.Status)
			}
			if got := positions(c.Steps); len(tt.steps) > 0 && !reflect.DeepEqual(got, tt.steps) {
				t.Errorf("steps %v, want %v", got, tt.steps)
			}
			if c.Least.Std() != tt.least {
				t.Errorf("least %v, want %v", c.Least, tt.least)
			}
			var got []string
			for _, e := range c.Edits {
				got = append(got, strings.TrimSpace(e.Section+" "+e.Name+" "+e.Kind+": "+e.Detail))
			}
			for i := range got {
				got[i] = strings.TrimSuffix(got[i], ":")
			}
			if len(tt.editsWant) > 0 || len(got) > 0 {
				if !reflect.DeepEqual(got, tt.editsWant) {
					t.Errorf("edits %q, want %q", got, tt.editsWant)
				}
			}
		})
	}

	other := loadBase(t, "name: base", "name: other")
	changes := Compare([]*Plan{base}, []*Plan{other})
	if len(changes) != 2 || changes[0].Status != StatusRemoved || changes[1].Status != StatusAdded || changes[1].Move != MoveAdvance {
		t.Errorf("rename: %+v", changes)
	}
	if c := Compare([]*Plan{base}, []*Plan{base}); c[0].Status != StatusUnchanged || c[0].Move != MoveNone {
		t.Errorf("unchanged: %+v", c[0])
	}
}

func TestTargetsAndPointsOfNoReturn(t *testing.T) {
	p := loadBase(t)
	for _, pos := range p.Timeline(Last) {
		if got := p.Resolve(p.TargetFor(pos.Position)); got != pos.Position {
			t.Errorf("Resolve(TargetFor(%s)) = %s", pos.Position, got)
		}
	}
	if got := p.TargetFor(Start); got.Phase != "shadow" || got.Percentage != nil {
		t.Errorf("TargetFor(start) = %+v", got)
	}
	// A first phase with steps stands for start at 0%, not at its last
	// step, which a rollback to start would otherwise commit as the target.
	q := loadBase(t, "    - name: shadow\n      mirror: 100\n      soak: 1h\n", "")
	if got := q.Resolve(q.TargetFor(Start)); got != (Position{Phase: "canary"}) {
		t.Errorf("Resolve(TargetFor(start)) without a mirror phase = %s, want canary 0%%", got)
	}
	if s, ok := p.StepBefore(Position{Phase: "canary", Percentage: 20}); !ok || s.Position.String() != "canary 10%" {
		t.Errorf("StepBefore(canary 20%%) = %v %v", s.Position, ok)
	}
	if _, ok := p.StepBefore(Position{Phase: "shadow"}); ok {
		t.Error("a step before the first")
	}
	full, migrate := Position{Phase: "full", Percentage: 100}, Position{Phase: "migrate", Percentage: 25}
	if s, ok := p.PointOfNoReturn(full, Position{Phase: "canary", Percentage: 5}); !ok || s.Position != migrate {
		t.Errorf("full → canary 5%%: %v %v", s.Position, ok)
	}
	if _, ok := p.PointOfNoReturn(full, migrate); ok {
		t.Error("moving back to the point of no return itself goes past it")
	}
	if _, ok := p.PointOfNoReturn(Position{Phase: "canary", Percentage: 25}, Start); ok {
		t.Error("a move before the irreversible phase goes past it")
	}
}

// TestStepEncoding checks that a step is written with all its fields (its
// embedded Position's methods would write the position alone) and read
// back the same.
func TestStepEncoding(t *testing.T) {
	if n, m := reflect.TypeFor[Step]().NumField()+1, reflect.TypeFor[stepFields]().NumField(); n != m {
		t.Fatalf("Step has %d fields counting Position's two, stepFields %d: keep them in step", n, m)
	}
	d := Duration(time.Hour)
	s := Step{Position: Position{Phase: "migrate", Percentage: 25}, Index: 3, Kind: "run", Mirror: 0, Checkpoint: "pre",
		Run: &Run{Image: "m:1"}, Soak: Duration(time.Minute), Verify: []string{"a"}, Irreversible: true,
		Decommission: &d, OnBreach: Breach{Action: BreachRollback, To: &Position{Phase: "canary", Percentage: 10}}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"phase":"migrate"`, `"soak":"1m"`, `"irreversible":true`, `"checkpoint":"pre"`, `"index":3`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	var back Step
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, s)
	}
	y, err := yaml.Marshal(s)
	if err != nil || !strings.Contains(string(y), "soak: 1m\n") || !strings.Contains(string(y), "phase: migrate") {
		t.Errorf("YAML: %v\n%s", err, y)
	}
}

func TestParsePosition(t *testing.T) {
	for _, p := range []Position{Start, {Phase: "canary", Percentage: 5}, {Phase: "full", Percentage: 100}, {Phase: "shadow"}} {
		got, err := ParsePosition(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", p.String(), got, err, p)
		}
	}
	for _, bad := range []string{"", "canary", "canary 5", "canary x%", "canary 101%", " 5%", "canary -1%"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) accepted", bad)
		}
	}
}
