package daemon

import (
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// FuzzStatusFile feeds parseStatus and resumeFrom, which read status files
// from Git (another daemon's, or a person's edit), with anything: they
// return a status or an error, never panic, within the size budget.
func FuzzStatusFile(f *testing.F) {
	st := Status{APIVersion: plan.APIVersion, Kind: "MigrationStatus"}
	st.Metadata.Name = "shop"
	st.Status = StatusBody{Phase: "canary", Percentage: 25, Target: "full 100%", Since: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC),
		State: "Progressing", Group: "layers", Waiting: []string{"waiting for x at full for 1h: it stands at start"},
		Reached: []store.Reached{{Position: plan.Position{Phase: "canary", Percentage: 5}, At: time.Date(2026, 11, 1, 11, 0, 0, 0, time.UTC)}},
		Failed:  []FailedPosition{{Position: "canary 50%", Commit: "abc", Reason: "breach"}}}
	good, err := st.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("kind: MigrationStatus\nmetadata: {name: shop}\nstatus: {phase: start}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("status: {reached: [{position: {phase: 7}, at: never}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseStatus(b, "shop"); err != nil {
			return
		}
		_, _ = resumeFrom(b, "shop")
	})
}
