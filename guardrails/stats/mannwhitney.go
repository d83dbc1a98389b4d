package stats

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// Result is a one-sided Mann-Whitney U test of the hypothesis that the
// candidate's values are stochastically greater than stable's (for a
// latency: that the candidate is slower), with each side's median and the
// Hodges–Lehmann estimate of the shift between them.
type Result struct {
	// U counts the pairs of one stable and one candidate sample where the
	// candidate's is greater, a tie counting half: from 0 to N*M, and
	// N*M/2 on average when both sides come from one distribution.
	U float64
	// P is the one-sided p-value: the chance, were both sides drawn from
	// one distribution, of a U at least as large as this one.
	P float64
	// Exact is true when P comes from the exact permutation distribution
	// of the ranks, false when from the normal approximation.
	Exact bool
	// N and M are the numbers of stable and candidate samples.
	N, M int
	// StableMedian and CandidateMedian are the medians of each side's
	// samples.
	StableMedian, CandidateMedian float64
	// Shift is the Hodges–Lehmann estimate of how far the candidate sits
	// above stable: the median of the N*M differences candidate - stable.
	// Unlike the difference of the medians it uses every sample, and
	// unlike the difference of the means one slow request barely moves
	// it.
	Shift float64
}

// MannWhitney tests whether candidate's values are stochastically greater
// than stable's: it returns U, the one-sided p-value, each side's median and
// the Hodges–Lehmann shift. Every sample must be a finite number, and each
// side needs at least one; the slices are not modified.
//
// The p-value is exact, ties included, when the exact distribution is cheap
// (see exactBudget); otherwise it is the normal approximation of U with the
// tie correction of its variance and a continuity correction of ½. Either
// way the work is O((N+M) log(N+M)).
func MannWhitney(stable, candidate []float64) (Result, error) {
	if err := checkSamples("stable", stable); err != nil {
		return Result{}, err
	}
	if err := checkSamples("candidate", candidate); err != nil {
		return Result{}, err
	}
	s, c := slices.Clone(stable), slices.Clone(candidate)
	slices.Sort(s)
	slices.Sort(c)
	return mannWhitneySorted(s, c), nil
}

// mannWhitneySorted is MannWhitney of finite samples, each side sorted and
// not empty.
func mannWhitneySorted(s, c []float64) Result {
	n, m := len(s), len(c)
	r := Result{
		N:               n,
		M:               m,
		StableMedian:    median(s),
		CandidateMedian: median(c),
		Shift:           hodgesLehmann(s, c),
	}
	rk := rank(s, c)
	// The candidate's doubled rank sum less its least possible value is
	// 2U: the candidate's i-th smallest sample has rank i plus the number
	// of stable samples under it, ties counting half.
	r.U = float64(rk.candidateSum2-int64(m)*int64(m+1)) / 2
	if p, ok := exactP(rk, n, m); ok {
		r.P, r.Exact = p, true
	} else {
		r.P = normalP(r.U, n, m, rk.ties)
	}
	return r
}

// checkSamples says what is wrong with one side's samples, if anything.
func checkSamples(side string, xs []float64) error {
	if len(xs) == 0 {
		return fmt.Errorf("mann-whitney test: no %s samples", side)
	}
	bad := 0
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("mann-whitney test: %d of %d %s samples are not finite numbers", bad, len(xs), side)
	}
	return nil
}

// median returns the median of sorted xs, which is not empty.
func median(xs []float64) float64 {
	h := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[h]
	}
	return mean2(xs[h-1], xs[h])
}

// mean2 is the mean of a and b that neither overflows nor gives -0, so that
// negating both gives the negated mean exactly.
func mean2(a, b float64) float64 {
	return a/2 + b/2 + 0
}

// ranks are the ranks of the pooled samples, each doubled so that a midrank
// (the mean of the positions a group of tied values spans) is an integer.
type ranks struct {
	// candidateSum2 is the sum of the candidate's doubled ranks.
	candidateSum2 int64
	// groups are the distinct values, smallest first: how many samples
	// share each one and their doubled midrank.
	groups []tieGroup
	// ties is the sum of t³ - t over the groups' sizes t, which the
	// variance of U loses to ties.
	ties float64
}

// tieGroup is a set of equal samples: size of them, each with doubled rank
// rank2.
type tieGroup struct {
	size  int
	rank2 int64
}

// rank merges sorted s and c into their pooled ranks. The groups are kept
// only when the exact distribution could use them, so that 100,000 samples
// cost no more than the sort did.
func rank(s, c []float64) ranks {
	var r ranks
	if len(s)+len(c) <= exactMaxTotal {
		r.groups = make([]tieGroup, 0, len(s)+len(c))
	}
	pos := 0 // samples before the current group
	i, j := 0, 0
	for i < len(s) || j < len(c) {
		var v float64
		switch {
		case j == len(c) || i < len(s) && s[i] < c[j]:
			v = s[i]
		default:
			v = c[j]
		}
		a, b := 0, 0
		for i < len(s) && s[i] == v {
			i++
			a++
		}
		for j < len(c) && c[j] == v {
			j++
			b++
		}
		t := a + b
		rank2 := int64(2*pos + t + 1) // first position pos+1, last pos+t
		r.candidateSum2 += int64(b) * rank2
		if t > 1 {
			ft := float64(t)
			r.ties += ft*ft*ft - ft
		}
		if r.groups != nil {
			r.groups = append(r.groups, tieGroup{size: t, rank2: rank2})
		}
		pos += t
	}
	return r
}

// normalP is the upper tail of U in the normal approximation: mean NM/2,
// variance NM/12 · (N+M+1 - Σ(t³-t)/((N+M)(N+M-1))) for tie groups of
// sizes t, and ½ taken off U for continuity (as scipy's mannwhitneyu and
// R's wilcox.test do). With every sample equal U has no variance and is its
// mean: P is 1.
func normalP(u float64, n, m int, ties float64) float64 {
	fn, fm := float64(n), float64(m)
	t := fn + fm
	variance := fn * fm / 12 * (t + 1 - ties/(t*(t-1)))
	if !(variance > 0) {
		return 1
	}
	z := (u - fn*fm/2 - 0.5) / math.Sqrt(variance)
	return distuv.UnitNormal.Survival(z)
}
