package plan

import (
	"reflect"
	"testing"
)

// TestCompareRollbackPastNoReturn checks what a diff says of a target
// lowered past a completed irreversible phase: the daemon goes back only to
// the point of no return and holds there, unless the plan carries the
// force-rollback annotation for the new target.
func TestCompareRollbackPastNoReturn(t *testing.T) {
	atFull := []string{"    phase: canary\n    percentage: 10", "    phase: full"}
	forced := []string{"  name: base", "  name: base\n  annotations: {migrate.hal9.ai/force-rollback: \"canary 10%\"}"}
	checkpoint := []string{"verify: [integrity]", "verify: [integrity]\n      checkpoint: pre-migrate"}
	tests := []struct {
		name       string
		base, head []string
		noReturn   string // "" when the rollback passes none
		forced     bool
		restore    string
		steps      []string
	}{
		{"past the point of no return", atFull, nil, "migrate 25%", false, "", []string{"migrate 25%"}},
		{"forced", atFull, forced, "migrate 25%", true, "", []string{"canary 10%"}},
		{"forced, with a checkpoint", append(atFull, checkpoint...), append(forced, checkpoint...), "migrate 25%", true, "pre-migrate", []string{"canary 10%"}},
		{"forced to another position", atFull, []string{"  name: base", "  name: base\n  annotations: {migrate.hal9.ai/force-rollback: \"shadow 0%\"}"},
			"migrate 25%", false, "", []string{"migrate 25%"}},
		{"back to the point of no return", atFull, []string{"    phase: canary\n    percentage: 10", "    phase: migrate"}, "", false, "", []string{"migrate 25%"}},
		{"within a phase", []string{"percentage: 10", "percentage: 25"}, nil, "", false, "", []string{"canary 10%"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changes := Compare([]*Plan{loadBase(t, tt.base...)}, []*Plan{loadBase(t, tt.head...)})
			if len(changes) != 1 {
				t.Fatalf("%d changes", len(changes))
			}
			c := changes[0]
			if c.Move != MoveRollback {
				t.Fatalf("move %s, want %s", c.Move, MoveRollback)
			}
			got := ""
			if c.NoReturn != nil {
				got = c.NoReturn.String()
			}
			if got != tt.noReturn || c.Forced != tt.forced || c.Restore != tt.restore {
				t.Errorf("noReturn %q forced %v restore %q, want %q %v %q", got, c.Forced, c.Restore, tt.noReturn, tt.forced, tt.restore)
			}
			if got := positions(c.Steps); !reflect.DeepEqual(got, tt.steps) {
				t.Errorf("steps %v, want %v", got, tt.steps)
			}
		})
	}
}
