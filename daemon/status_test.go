package daemon

import (
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// A status commit's subject says the state, the position and the last
// event, so that an advance and the entry it leads to read differently; a
// plan that has done nothing yet has no state to say.
func TestStatusSummary(t *testing.T) {
	withState := func(s string) Status { var st Status; st.Status.State = s; return st }
	for _, tc := range []struct {
		st      Status
		at      string
		history []store.Event
		want    string
	}{
		{withState(""), plan.Start.String(), nil, "shop at start"},
		{withState("Progressing"), "canary 30% → canary 40%", []store.Event{{Kind: "Advance"}}, "shop Progressing at canary 30% → canary 40% (Advance)"},
		{withState("Progressing"), "canary 40%", []store.Event{{Kind: "Advance"}, {Kind: "Entered"}}, "shop Progressing at canary 40% (Entered)"},
	} {
		if got := statusSummary("shop", tc.st, tc.at, tc.history); got != tc.want {
			t.Errorf("statusSummary = %q, want %q", got, tc.want)
		}
	}
}
