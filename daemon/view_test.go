package daemon

import (
	"os"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// TestTimelineFailedUnderCurrentCommit checks that the timeline marks as
// failed only the positions that failed under the plan's current commit:
// after a newer commit a failed position is allowed again, and shows as
// the step it is now.
func TestTimelineFailedUnderCurrentCommit(t *testing.T) {
	src, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.ValidateOne(plan.Source{Path: "plans/shop.yaml", Data: src})
	if err != nil {
		t.Fatal(err)
	}
	canary := func(pct int) plan.Position { return plan.Position{Phase: "canary", Percentage: pct} }
	rec := store.Record{Position: canary(5), Failed: []store.Failure{
		{Position: canary(10), Commit: "old", Reason: "guardrail errors is 0.09, max 0.05"},
	}}
	target := canary(25)
	tests := []struct {
		commit string
		want   map[plan.Position]string
	}{
		{"old", map[plan.Position]string{canary(5): "current", canary(10): "failed", canary(25): "planned"}},
		{"new", map[plan.Position]string{canary(5): "current", canary(10): "next", canary(25): "planned"}},
	}
	for _, tt := range tests {
		steps, _ := timelineOf(p, target, tt.commit, rec)
		for _, s := range steps {
			if want, ok := tt.want[s.Position]; ok && s.State != want {
				t.Errorf("under commit %s, %s is %q, want %q", tt.commit, s.Position, s.State, want)
			}
		}
	}
}
