package main

import (
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
)

const rollbackPlan = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: shop}
spec:
  target: {phase: %s}
  driver:
    docker:
      stable: {service: a}
      candidate: {service: b}
      traffic: {nginx: {container: r, upstream: u}}
  phases:
    - {name: shadow, mirror: 100}
    - {name: canary, steps: [5, 10, 25, 35]}
    - {name: migrate, run: {image: m, command: [m]}, checkpoint: pre-migrate, irreversible: true}
    - {name: ramp, steps: [50, 75]}
    - {name: full, steps: [100]}
`

// TestRollback checks where rollback moves the target, and when it refuses.
func TestRollback(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target  string // spec.target, as YAML flow fields
		toPhase string
		force   bool
		want    string // the change, or the error's start
	}{
		{"canary, percentage: 25", "", false, "set spec.target to canary 10%"},
		{"canary, percentage: 20", "", false, "set spec.target to canary 10%"}, // between steps
		{"canary, percentage: 5", "", false, "set spec.target to shadow (its last step)"},
		{"shadow", "", false, "error: the target of shop, shadow 0%, is the first step"},
		{"ramp, percentage: 50", "", false, "set spec.target to migrate (its last step)"},
		{"ramp, percentage: 75", "", false, "set spec.target to ramp 50%"},
		{"migrate", "", false, "error: refusing to roll back shop from migrate 35% to canary 35%"},
		{"migrate", "", true, `set spec.target to canary 35%; set annotation migrate.hal9.ai/force-rollback to "canary 35%"`},
		{"full", "canary", false, "error: refusing to roll back shop from full 100% to canary 35%: that goes back past migrate 35%"},
		{"full", "canary", true, `set spec.target to canary (its last step); set annotation migrate.hal9.ai/force-rollback to "canary 35%"`},
		{"full", "migrate", false, "set spec.target to migrate (its last step)"},
		{"ramp, percentage: 50", "shadow", true, `set spec.target to shadow (its last step); set annotation migrate.hal9.ai/force-rollback to "shadow 0%"`},
		{"canary, percentage: 25", "shadow", true, "set spec.target to shadow (its last step)"},
		{"canary, percentage: 25", "canary", false, "error: phase canary ends at canary 35%, which is not before"},
		{"canary, percentage: 25", "nope", false, `error: shop has no phase "nope"; its phases are shadow, canary, migrate, ramp, full`},
	}
	for _, tt := range tests {
		src := plan.Source{Path: "shop.yaml", Data: []byte(strings.Replace(rollbackPlan, "%s", tt.target, 1))}
		p, err := v.ValidateOne(src)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		d, err := rollback(p, tt.toPhase, tt.force)
		if err != nil {
			got = "error: " + err.Error()
		} else {
			var parts []string
			for _, e := range d.edits {
				parts = append(parts, e.String())
			}
			got = strings.Join(parts, "; ")
			if _, err := plan.ApplyEdits(src.Path, src.Data, d.edits...); err != nil {
				t.Errorf("%s: %v", tt.want, err)
			}
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("target {phase: %s} rollback --to-phase %q --force=%v:\n got %s\nwant %s", tt.target, tt.toPhase, tt.force, got, tt.want)
		}
	}
}

func TestWrap(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
	}{
		{"", ""},
		{"one", "one"},
		{"aaa bbb ccc", "aaa bbb\nccc"},
		{"aaaaaaaaaa bb", "aaaaaaaaaa\nbb"},
		{"  a   b  ", "a b"},
	} {
		if got := wrap(tt.in, 8); got != tt.want {
			t.Errorf("wrap(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
