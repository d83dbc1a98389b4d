package traffic

import "testing"

func TestRatioFor(t *testing.T) {
	for _, tc := range []struct {
		traffic, total int
		want           Ratio
	}{
		{0, 1, Ratio{Stable: 1}},
		{5, 1, Ratio{Stable: 1, Candidate: 1, Share: 50}},
		{10, 1, Ratio{Stable: 1, Candidate: 1, Share: 50}},
		{99, 1, Ratio{Stable: 1, Candidate: 1, Share: 50}},
		{100, 1, Ratio{Candidate: 1, Share: 100}},
		{0, 0, Ratio{Stable: 1}},
		{5, 0, Ratio{Stable: 1, Candidate: 1, Share: 50}},
		{5, 2, Ratio{Stable: 1, Candidate: 1, Share: 50}},
		{90, 2, Ratio{Stable: 1, Candidate: 1, Share: 50}},
		{100, 2, Ratio{Candidate: 2, Share: 100}},
		{5, 3, Ratio{Stable: 2, Candidate: 1, Share: 33}},
		{50, 3, Ratio{Stable: 1, Candidate: 2, Share: 67}}, // 1.5 replicas: the tie goes up
		{49, 3, Ratio{Stable: 2, Candidate: 1, Share: 33}},
		{95, 3, Ratio{Stable: 1, Candidate: 2, Share: 67}},
		{5, 10, Ratio{Stable: 9, Candidate: 1, Share: 10}},
		{1, 10, Ratio{Stable: 9, Candidate: 1, Share: 10}},
		{25, 10, Ratio{Stable: 7, Candidate: 3, Share: 30}},
		{94, 10, Ratio{Stable: 1, Candidate: 9, Share: 90}},
		{99, 10, Ratio{Stable: 1, Candidate: 9, Share: 90}},
		{100, 10, Ratio{Candidate: 10, Share: 100}},
		{-3, 4, Ratio{Stable: 4}},
		{130, 4, Ratio{Candidate: 4, Share: 100}},
	} {
		if got := RatioFor(tc.traffic, tc.total); got != tc.want {
			t.Errorf("RatioFor(%d, %d) = %+v, want %+v", tc.traffic, tc.total, got, tc.want)
		}
	}
}

// TestRatioForInvariants checks every target at many totals: stable keeps a
// replica before full, the candidate has one once it takes traffic, the
// share is the one the replicas give and the nearest reachable.
func TestRatioForInvariants(t *testing.T) {
	for total := 1; total <= 40; total++ {
		tol := RatioTolerance(total)
		for p := 0; p <= 100; p++ {
			r := RatioFor(p, total)
			n := r.Stable + r.Candidate
			switch {
			case p < 100 && r.Stable == 0:
				t.Fatalf("RatioFor(%d, %d) = %+v: stable has no replica before full", p, total, r)
			case p > 0 && r.Candidate == 0:
				t.Fatalf("RatioFor(%d, %d) = %+v: the candidate has no replica but should take traffic", p, total, r)
			case n != total && !(total == 1 && p > 0 && p < 100):
				t.Fatalf("RatioFor(%d, %d) = %+v: not the total", p, total, r)
			case r.Share != Share(r.Candidate, n):
				t.Fatalf("RatioFor(%d, %d) = %+v: share is not the replicas'", p, total, r)
			}
			if p > 0 && p < 100 {
				for c := 1; c < n; c++ {
					if d, best := abs(Share(c, n)-p), abs(r.Share-p); d < best {
						t.Fatalf("RatioFor(%d, %d) = %+v: %d of %d replicas is nearer", p, total, r, c, n)
					}
				}
			}
			if d := abs(r.Share - p); d > tol {
				t.Fatalf("RatioFor(%d, %d) = %+v is %d off, beyond RatioTolerance %d", p, total, r, d, tol)
			}
		}
	}
	if got := RatioTolerance(10); got != 9 {
		t.Errorf("RatioTolerance(10) = %d, want 9", got)
	}
	if got := RatioTolerance(1); got != 49 {
		t.Errorf("RatioTolerance(1) = %d, want 49", got)
	}
}

func abs(x int) int { return max(x, -x) }

// TestRatioForWorkedExamples pins the table in RatioFor's documentation.
func TestRatioForWorkedExamples(t *testing.T) {
	for _, tc := range []struct{ traffic, total, stable, candidate, share int }{
		{0, 4, 4, 0, 0},
		{5, 1, 1, 1, 50},
		{5, 3, 2, 1, 33},
		{5, 10, 9, 1, 10},
		{25, 4, 3, 1, 25},
		{30, 4, 3, 1, 25},
		{50, 3, 1, 2, 67},
		{90, 2, 1, 1, 50},
		{100, 4, 0, 4, 100},
	} {
		want := Ratio{Stable: tc.stable, Candidate: tc.candidate, Share: tc.share}
		if got := RatioFor(tc.traffic, tc.total); got != want {
			t.Errorf("RatioFor(%d, %d) = %+v, want %+v", tc.traffic, tc.total, got, want)
		}
	}
}
