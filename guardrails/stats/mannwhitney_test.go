package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// bruteForce computes U, the exact one-sided p-value and the Hodges–Lehmann
// shift by the definitions, for a handful of samples: U by comparing every
// pair, the p-value by listing every way of splitting the pooled samples
// into sides of len(stable) and len(candidate), and the shift by sorting
// every difference. It shares no code with MannWhitney.
func bruteForce(stable, candidate []float64) (u, p, shift float64) {
	pooled := append(slices.Clone(stable), candidate...)
	u2 := func(s, c []float64) int {
		n := 0
		for _, y := range c {
			for _, x := range s {
				switch {
				case y > x:
					n += 2
				case y == x:
					n++
				}
			}
		}
		return n
	}
	observed := u2(stable, candidate)
	t, m := len(pooled), len(candidate)
	var atLeast, all int
	for mask := 0; mask < 1<<t; mask++ {
		if popcount(mask) != m {
			continue
		}
		var s, c []float64
		for i, v := range pooled {
			if mask>>i&1 == 1 {
				c = append(c, v)
			} else {
				s = append(s, v)
			}
		}
		all++
		if u2(s, c) >= observed {
			atLeast++
		}
	}
	return float64(observed) / 2, float64(atLeast) / float64(all), shiftByList(stable, candidate)
}

func popcount(x int) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

func TestMannWhitneyKnownValues(t *testing.T) {
	for _, tc := range []struct {
		name              string
		stable, candidate []float64
		u, p, shift       float64
	}{
		// scipy.stats.mannwhitneyu's documented example (Conover): males
		// against females, U = 17, two-sided exact p = 0.1111111111111111
		// = 14/126, so 7/126 one-sided.
		{"scipy example", []float64{20, 11, 17, 12}, []float64{19, 22, 16, 29, 24}, 17, 7.0 / 126, 7},
		{"candidate above all", []float64{1, 2, 3}, []float64{4, 5, 6}, 9, 1.0 / 20, 3},
		{"candidate below all", []float64{4, 5, 6}, []float64{1, 2, 3}, 0, 1, -3},
		{"one each, greater", []float64{1}, []float64{2}, 1, 0.5, 1},
		{"one each, equal", []float64{1}, []float64{1}, 0.5, 1, 0},
		{"one each, less", []float64{2}, []float64{1}, 0, 1, -1},
		{"all equal", []float64{5, 5, 5}, []float64{5, 5}, 3, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := MannWhitney(tc.stable, tc.candidate)
			if err != nil {
				t.Fatal(err)
			}
			if r.U != tc.u || !near(r.P, tc.p, 1e-12) || r.Shift != tc.shift || !r.Exact {
				t.Errorf("got U=%v P=%v shift=%v exact=%v, want U=%v P=%v shift=%v exact", r.U, r.P, r.Shift, r.Exact, tc.u, tc.p, tc.shift)
			}
		})
	}
}

func TestMannWhitneyAgainstBruteForce(t *testing.T) {
	for _, tc := range []struct {
		name              string
		stable, candidate []float64
	}{
		{"ties across the sides", []float64{1, 2, 2, 3}, []float64{2, 3, 3, 4}},
		{"tie groups of even size", []float64{1, 1, 2, 2, 3, 3}, []float64{2, 2, 3, 3, 4}},
		{"one group of every size", []float64{1, 2, 2, 3, 3, 3}, []float64{4, 4, 4, 4, 2, 3}},
		{"one stable sample", []float64{3}, []float64{0, 2, 3, 4, 5, 6, 7}},
		{"one candidate sample", []float64{0, 2, 3, 4, 5, 6, 7}, []float64{3}},
		{"negative values", []float64{-3, -1, -1, 0}, []float64{-2, -1, 0, 0, 1}},
		{"sub-millisecond", []float64{0.0011, 0.0012, 0.0013}, []float64{0.0012, 0.0014, 0.0015}},
		{"mostly tied", []float64{1, 1, 1, 1, 1, 1}, []float64{1, 1, 1, 1, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkBruteForce(t, tc.stable, tc.candidate)
		})
	}
}

// TestMannWhitneyRandomSmall compares the exact p-values and the shift with
// brute force on a few hundred random small samples, ties frequent.
func TestMannWhitneyRandomSmall(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 300 {
		n, m := 1+r.IntN(7), 1+r.IntN(7)
		levels := 1 + r.IntN(8)
		draw := func(k int) []float64 {
			xs := make([]float64, k)
			for i := range xs {
				xs[i] = float64(r.IntN(levels)) * 0.5
			}
			return xs
		}
		checkBruteForce(t, draw(n), draw(m))
		if t.Failed() {
			return
		}
	}
}

func checkBruteForce(t *testing.T, stable, candidate []float64) {
	t.Helper()
	u, p, shift := bruteForce(stable, candidate)
	r, err := MannWhitney(stable, candidate)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Exact || r.U != u || !near(r.P, p, 1e-12) || r.Shift != shift {
		t.Errorf("MannWhitney(%v, %v) = U %v, P %v, shift %v, exact %v; brute force: U %v, P %v, shift %v",
			stable, candidate, r.U, r.P, r.Shift, r.Exact, u, p, shift)
	}
}

// TestTieCorrection checks the variance normalP gives U against the
// variance of U over every split of a tied sample, which is what the
// correction claims to be.
func TestTieCorrection(t *testing.T) {
	for _, pooled := range [][]float64{
		{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
		{1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 5},
		{7, 7, 7, 7, 7, 7, 8, 8, 9},
	} {
		for m := 1; m < len(pooled); m++ {
			n := len(pooled) - m
			var sum, sumSq, count float64
			for mask := 0; mask < 1<<len(pooled); mask++ {
				if popcount(mask) != m {
					continue
				}
				var s, c []float64
				for i, v := range pooled {
					if mask>>i&1 == 1 {
						c = append(c, v)
					} else {
						s = append(s, v)
					}
				}
				u, _, _ := bruteForce(s, c)
				sum += u
				sumSq += u * u
				count++
			}
			want := sumSq/count - (sum/count)*(sum/count)
			s, c := slices.Clone(pooled[:n]), slices.Clone(pooled[n:])
			slices.Sort(s)
			slices.Sort(c)
			ties := rank(s, c).ties
			fn, fm, ft := float64(n), float64(m), float64(len(pooled))
			got := fn * fm / 12 * (ft + 1 - ties/(ft*(ft-1)))
			if !near(got, want, 1e-9) {
				t.Errorf("%v split %d/%d: tie-corrected variance %v, variance over the splits %v", pooled, n, m, got, want)
			}
		}
	}
}

func TestNormalP(t *testing.T) {
	// scipy.stats.mannwhitneyu(males, females, method="asymptotic") in
	// scipy's documentation gives the two-sided p-value
	// 0.11134688653314041 for U = 17, sizes 5 and 4, no ties.
	if got, want := normalP(17, 4, 5, 0), 0.11134688653314041/2; !near(got, want, 1e-12) {
		t.Errorf("normalP(17, 4, 5) = %v, want %v", got, want)
	}
	if got := normalP(4.5, 3, 3, 6*6*6-6); got != 1 {
		t.Errorf("normalP with every sample tied = %v, want 1", got)
	}
}

// TestNormalNearExact checks the approximation against the exact
// distribution just past the budget, where MannWhitney switches between
// them: the p-values must agree within 0.005.
func TestNormalNearExact(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	worst := 0.0
	for range 40 {
		n, m := 24+r.IntN(8), 24+r.IntN(8)
		draw := func(k int, shift float64) []float64 {
			xs := make([]float64, k)
			for i := range xs {
				xs[i] = math.Round(100 * math.Exp(0.4*r.NormFloat64()+shift))
			}
			return xs
		}
		s, c := draw(n, 0), draw(m, 0.15*r.Float64())
		slices.Sort(s)
		slices.Sort(c)
		rk := rank(s, c)
		res, err := MannWhitney(s, c)
		if err != nil {
			t.Fatal(err)
		}
		exact := forceExact(rk, n, m)
		normal := normalP(res.U, n, m, rk.ties)
		worst = max(worst, math.Abs(exact-normal))
	}
	if worst > 0.005 {
		t.Errorf("normal approximation off the exact p-value by up to %v", worst)
	}
	t.Logf("normal approximation within %.4f of the exact p-value", worst)
}

// forceExact is exactP without the budget.
func forceExact(rk ranks, n, m int) float64 {
	var g int64
	for _, grp := range rk.groups {
		g = gcd(g, grp.rank2)
	}
	var a []int64
	var total int64
	for _, grp := range rk.groups {
		for range grp.size {
			a = append(a, grp.rank2/g)
			total += grp.rank2 / g
		}
	}
	if m <= n {
		return rankSumTail(a, m, rk.candidateSum2/g, true)
	}
	return rankSumTail(a, n, total-rk.candidateSum2/g, false)
}

// TestExactWithinBudget pins which sizes get the exact distribution, as
// exactBudget's comment tells.
func TestExactWithinBudget(t *testing.T) {
	seq := func(k int, from, step float64) []float64 {
		xs := make([]float64, k)
		for i := range xs {
			xs[i] = from + float64(i)*step
		}
		return xs
	}
	tied := func(k int) []float64 {
		xs := make([]float64, k)
		for i := range xs {
			xs[i] = float64(i / 2)
		}
		return xs
	}
	for _, tc := range []struct {
		name              string
		stable, candidate []float64
		exact             bool
	}{
		{"29 each, no ties", seq(29, 0, 1), seq(29, 0.5, 1), true},
		{"30 each, no ties", seq(30, 0, 1), seq(30, 0.5, 1), false},
		{"25 each, tied in pairs", tied(25), tied(25), true},
		{"26 each, tied in pairs", tied(26), tied(26), false},
		{"5 against 200", seq(5, 0.5, 40), seq(200, 0, 1), true},
		{"200 against 5", seq(200, 0, 1), seq(5, 0.5, 40), true},
		{"500 each, all tied", make([]float64, 500), make([]float64, 500), true},
		{"1,001 each, all tied", make([]float64, 1001), make([]float64, 1001), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := MannWhitney(tc.stable, tc.candidate)
			if err != nil {
				t.Fatal(err)
			}
			if r.Exact != tc.exact {
				t.Errorf("Exact = %v, want %v", r.Exact, tc.exact)
			}
		})
	}
}

// TestSwapSides: swapping the sides mirrors U and negates the shift
// exactly.
func TestSwapSides(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for range 200 {
		draw := func() []float64 {
			xs := make([]float64, 1+r.IntN(60))
			for i := range xs {
				xs[i] = math.Round(r.ExpFloat64()*20) / 4
			}
			return xs
		}
		s, c := draw(), draw()
		a, err := MannWhitney(s, c)
		if err != nil {
			t.Fatal(err)
		}
		b, err := MannWhitney(c, s)
		if err != nil {
			t.Fatal(err)
		}
		if a.U+b.U != float64(len(s)*len(c)) || a.Shift != -b.Shift+0 || a.StableMedian != b.CandidateMedian {
			t.Fatalf("swapping %v and %v: U %v and %v, shift %v and %v", s, c, a.U, b.U, a.Shift, b.Shift)
		}
	}
}

// TestHodgesLehmannExtremes compares the bisection with sorting every
// difference on values of every scale, including differences that
// overflow to ±Inf, signed zeros and subnormals.
func TestHodgesLehmannExtremes(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	pick := []float64{0, math.Copysign(0, -1), 5e-324, -5e-324, 1e-300, 1, -1, 2.5, 1e300, -1e300, math.MaxFloat64, -math.MaxFloat64, 123456.789}
	for range 500 {
		draw := func() []float64 {
			xs := make([]float64, 1+r.IntN(9))
			for i := range xs {
				if r.IntN(3) == 0 {
					xs[i] = r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
				} else {
					xs[i] = pick[r.IntN(len(pick))]
				}
			}
			return xs
		}
		s, c := draw(), draw()
		want := shiftByList(s, c)
		ss, cc := slices.Clone(s), slices.Clone(c)
		slices.Sort(ss)
		slices.Sort(cc)
		if got := hodgesLehmann(ss, cc); got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("hodgesLehmann(%v, %v) = %v, sorting every difference gives %v", s, c, got, want)
		}
	}
}

// shiftByList is the Hodges–Lehmann shift by its definition: every
// difference listed and sorted.
func shiftByList(stable, candidate []float64) float64 {
	var diffs []float64
	for _, y := range candidate {
		for _, x := range stable {
			diffs = append(diffs, y-x)
		}
	}
	slices.Sort(diffs)
	h := len(diffs) / 2
	if len(diffs)%2 == 1 {
		return diffs[h] + 0
	}
	return diffs[h-1]/2 + diffs[h]/2 + 0
}

func TestMannWhitneyErrors(t *testing.T) {
	for _, tc := range []struct {
		name              string
		stable, candidate []float64
		err               string
	}{
		{"no stable samples", nil, []float64{1}, "mann-whitney test: no stable samples"},
		{"no candidate samples", []float64{1}, []float64{}, "mann-whitney test: no candidate samples"},
		{"NaN", []float64{1, math.NaN(), 2}, []float64{1}, "mann-whitney test: 1 of 3 stable samples are not finite numbers"},
		{"Inf", []float64{1}, []float64{math.Inf(1), math.Inf(-1)}, "mann-whitney test: 2 of 2 candidate samples are not finite numbers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MannWhitney(tc.stable, tc.candidate)
			if err == nil || err.Error() != tc.err {
				t.Errorf("got error %v, want %q", err, tc.err)
			}
		})
	}
}

// TestLargeSamples runs two sides of 100,000 samples, as a careless query
// could return: the work stays linear after the sort (the shift is never
// listed pair by pair) and the inputs are left as they were.
func TestLargeSamples(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	s := make([]float64, 100_000)
	c := make([]float64, 100_000)
	for i := range s {
		s[i] = math.Round(100 * math.Exp(0.4*r.NormFloat64()))
		c[i] = math.Round(101 * math.Exp(0.4*r.NormFloat64()))
	}
	first := s[0]
	res, err := MannWhitney(s, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exact || res.P > 0.01 || res.Shift < 0 || res.Shift > 2 || s[0] != first {
		t.Errorf("got %+v", res)
	}
}

func TestRankGroups(t *testing.T) {
	s := []float64{1, 2, 2, 4}
	c := []float64{2, 3, 4, 4}
	got := rank(s, c)
	want := []tieGroup{{1, 2}, {3, 6}, {1, 10}, {3, 14}}
	if !slices.Equal(got.groups, want) || got.candidateSum2 != 6+10+14+14 || got.ties != 24+24 {
		t.Errorf("rank = %+v, want groups %v, candidate sum 44, ties 48", got, want)
	}
}

func near(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b))
}
