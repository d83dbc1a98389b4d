package plan

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestExplanationEncoding checks that `plan explain -o json|yaml` says which
// steps lie beyond the target, and that the JSON reads back the same.
func TestExplanationEncoding(t *testing.T) {
	e := Explain(loadBase(t))
	var want []bool
	for _, s := range e.Steps {
		want = append(want, s.BeyondTarget)
	}

	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON struct {
		Steps []map[string]any `json:"steps"`
	}
	if err := json.Unmarshal(b, &fromJSON); err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var fromYAML struct {
		Steps []map[string]any `yaml:"steps"`
	}
	if err := yaml.Unmarshal(y, &fromYAML); err != nil {
		t.Fatal(err)
	}
	for name, steps := range map[string][]map[string]any{"json": fromJSON.Steps, "yaml": fromYAML.Steps} {
		var got []bool
		for _, s := range steps {
			if _, ok := s["phase"]; !ok {
				t.Errorf("%s: step without its phase: %v", name, s)
			}
			got = append(got, s["beyondTarget"] == true)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: beyondTarget %v, want %v", name, got, want)
		}
	}

	var back Explanation
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Steps, e.Steps) {
		t.Errorf("read back:\n got %+v\nwant %+v", back.Steps, e.Steps)
	}
}

// TestExplainJobTimeoutsToTarget checks that the least time to the target
// comes with the timeouts of the jobs run on the way, as the whole plan's
// does: a run phase as the target runs its job too.
func TestExplainJobTimeoutsToTarget(t *testing.T) {
	target := "    phase: canary\n    percentage: 10"
	tests := []struct {
		target string
		want   time.Duration
	}{
		{target, 0},
		{"    phase: migrate", 30 * time.Minute},
		{"    phase: full", 30 * time.Minute},
	}
	for _, tt := range tests {
		e := Explain(loadBase(t, target, tt.target))
		if got := e.ToTargetJobTimeouts.Std(); got != tt.want {
			t.Errorf("target %s: ToTargetJobTimeouts = %v, want %v", e.Target, got, tt.want)
		}
		if e.JobTimeouts.Std() != 30*time.Minute {
			t.Errorf("target %s: JobTimeouts = %v, want 30m", e.Target, e.JobTimeouts)
		}
	}
}

// TestExplainCheckpointOnce: a target below a phase's first step (canary
// 0%) starts the phase there; the steps beyond it in the same phase do not
// take its checkpoint again.
func TestExplainCheckpointOnce(t *testing.T) {
	e := Explain(loadBase(t, "percentage: 10", "percentage: 0"))
	var at []string
	for _, s := range e.Steps {
		if s.Checkpoint != "" {
			at = append(at, s.Position.String())
		}
	}
	if want := []string{"canary 0%"}; !reflect.DeepEqual(at, want) {
		t.Errorf("checkpoint pre-canary at %v, want %v", at, want)
	}
}
