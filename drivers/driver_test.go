package drivers

import (
	"testing"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

// TestMatchesReplicaRatio: by replica ratio the match is exact to what the
// total can reach, so a missing side is drift however near its share.
func TestMatchesReplicaRatio(t *testing.T) {
	for _, tc := range []struct {
		st   State
		t    Target
		want bool
	}{
		{State{Traffic: 50, ReplicaTotal: 1}, Target{Traffic: 5}, true},
		{State{Traffic: 0, ReplicaTotal: 1}, Target{Traffic: 5}, false},
		{State{Traffic: 100, ReplicaTotal: 1}, Target{Traffic: 5}, false},
		{State{Traffic: 100, ReplicaTotal: 1}, Target{Traffic: 100}, true},
		{State{Traffic: 10, ReplicaTotal: 10}, Target{Traffic: 5}, true},
		{State{Traffic: 20, ReplicaTotal: 10}, Target{Traffic: 5}, false},
		// Without ReplicaTotal, the tolerance.
		{State{Traffic: 20}, Target{Traffic: 5}, true},
		{State{Traffic: 30}, Target{Traffic: 5}, false},
	} {
		if got := tc.st.Matches(tc.t, 15); got != tc.want {
			t.Errorf("%+v.Matches(%+v, 15) = %t, want %t", tc.st, tc.t, got, tc.want)
		}
	}
}

// TestMatchesEveryRatio: the state a replica-ratio driver reaches for a
// target, as traffic.RatioFor splits it, matches that target.
func TestMatchesEveryRatio(t *testing.T) {
	for total := 1; total <= 40; total++ {
		for p := 0; p <= 100; p++ {
			r := traffic.RatioFor(p, total)
			st := State{Traffic: r.Share, StableReplicas: r.Stable, CandidateReplicas: r.Candidate, ReplicaTotal: total}
			if !st.Matches(Target{Traffic: p}, 0) {
				t.Fatalf("total %d: %+v does not match the target %d%% it was made for", total, st, p)
			}
		}
	}
}
