package stats

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Verdict is what a comparison concludes about the candidate.
type Verdict string

// The verdicts.
const (
	// Pass: the candidate is not worse than stable, or not by enough to
	// matter.
	Pass Verdict = "Pass"
	// Fail: the candidate is worse, with the confidence asked and by at
	// least the least effect asked.
	Fail Verdict = "Fail"
	// Inconclusive: too few usable samples, or a configuration nothing can
	// be concluded with.
	Inconclusive Verdict = "Inconclusive"
)

// Config is how a comparison judges: a plan's comparison, with its defaults
// applied.
type Config struct {
	// Confidence, between 0 and 1 exclusive, is the test's confidence:
	// the candidate fails only when P < 1 - Confidence.
	Confidence float64
	// MinEffect is the least shift, as a share of stable's median (0.1
	// for 10%), that fails: a significant but smaller shift passes. With
	// stable's median 0, any shift toward worse is at least MinEffect.
	MinEffect float64
	// MinSamples is the least number of finite samples each side needs;
	// with fewer the judgment is Inconclusive. Below 1 it counts as 1.
	MinSamples int
	// HigherIsBetter is set for values such as throughput, where the
	// candidate is worse when lower; latencies and error rates leave it
	// unset.
	HigherIsBetter bool
}

// Judgment is a verdict, the test behind it and why.
type Judgment struct {
	Verdict Verdict
	// Result is the test that the candidate is worse: for HigherIsBetter
	// it ran on the negated samples, so U and P are about the candidate
	// being lower, while N, M, the medians and Shift are in the samples'
	// own units and signs. It is zero when no test ran.
	Result Result
	// Reason is a short sentence for logs and status, such as
	// "candidate worse: shift +12 (+25%), p=0.003 < 0.05".
	Reason string
}

// Judge judges candidate against stable with c: Fail when the one-sided
// Mann-Whitney test finds the candidate worse with P < 1 - c.Confidence and
// the Hodges–Lehmann shift is toward worse by at least c.MinEffect of
// stable's median; Inconclusive when a side has fewer than c.MinSamples
// finite samples, or c is out of range; Pass otherwise. Samples that are
// not finite numbers (NaN, ±Inf) are left out and counted in the Reason.
// The slices are not modified.
func Judge(stable, candidate []float64, c Config) Judgment {
	if !(c.Confidence > 0 && c.Confidence < 1) {
		return Judgment{Verdict: Inconclusive, Reason: fmt.Sprintf("confidence %g is not between 0 and 1", c.Confidence)}
	}
	if !(c.MinEffect >= 0) || math.IsInf(c.MinEffect, 0) {
		return Judgment{Verdict: Inconclusive, Reason: fmt.Sprintf("minEffect %g is not a share of 0 or more", c.MinEffect)}
	}
	// The test asks whether the candidate is greater; for a value where
	// higher is better, it asks it of the negated values.
	sign := 1.0
	if c.HigherIsBetter {
		sign = -1
	}
	s, droppedS := finite(stable, sign)
	cand, droppedC := finite(candidate, sign)
	dropped := droppedNote(droppedS, droppedC)
	need := max(c.MinSamples, 1)
	if len(s) < need || len(cand) < need {
		return Judgment{
			Verdict: Inconclusive,
			Reason:  withNote(fmt.Sprintf("too few samples: %d stable and %d candidate, %d each needed", len(s), len(cand), need), dropped),
		}
	}
	// finite made the copies, which are Judge's to sort.
	slices.Sort(s)
	slices.Sort(cand)
	r := mannWhitneySorted(s, cand)
	alpha := 1 - c.Confidence
	significant := r.P < alpha
	worse := r.Shift >= c.MinEffect*math.Abs(r.StableMedian) && (r.Shift > 0 || c.MinEffect == 0)
	// Back to the samples' own units for the reader.
	r.StableMedian, r.CandidateMedian, r.Shift = sign*r.StableMedian+0, sign*r.CandidateMedian+0, sign*r.Shift+0
	shift := describeShift(r.Shift, r.StableMedian)
	p := "p=" + strconv.FormatFloat(r.P, 'g', 2, 64)
	a := strconv.FormatFloat(alpha, 'g', 3, 64)
	j := Judgment{Verdict: Pass, Result: r}
	switch {
	case !significant:
		j.Reason = fmt.Sprintf("no significant worsening: %s, %s >= %s", shift, p, a)
	case worse:
		j.Verdict = Fail
		j.Reason = fmt.Sprintf("candidate worse: %s, %s < %s", shift, p, a)
	case r.Shift*sign > 0:
		j.Reason = fmt.Sprintf("candidate worse by less than minEffect %s: %s, %s < %s", percent(c.MinEffect), shift, p, a)
	default:
		// Ranks and the shift estimate disagree only on heavily tied
		// samples: most pairs equal, the rest leaning one way.
		j.Reason = fmt.Sprintf("candidate ranks worse but its shift does not: %s, %s < %s", shift, p, a)
	}
	j.Reason = withNote(j.Reason, dropped)
	return j
}

// finite returns sign times each finite value of xs, and how many were not
// finite.
func finite(xs []float64, sign float64) ([]float64, int) {
	out := make([]float64, 0, len(xs))
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		out = append(out, sign*x)
	}
	return out, len(xs) - len(out)
}

// droppedNote says how many samples of each side were left out, or nothing.
func droppedNote(stable, candidate int) string {
	var parts []string
	if stable > 0 {
		parts = append(parts, fmt.Sprintf("%d stable", stable))
	}
	if candidate > 0 {
		parts = append(parts, fmt.Sprintf("%d candidate", candidate))
	}
	if parts == nil {
		return ""
	}
	return "left out " + strings.Join(parts, " and ") + " samples that are not finite numbers"
}

// withNote appends note to reason, if there is one.
func withNote(reason, note string) string {
	if note == "" {
		return reason
	}
	return reason + "; " + note
}

// describeShift writes a shift and its share of stable's median:
// "shift +12 (+25%)"; without the share when the median is 0.
func describeShift(shift, stableMedian float64) string {
	out := "shift " + signed(shift)
	if stableMedian != 0 {
		rel := shift / math.Abs(stableMedian)
		out += " (" + signedPercent(rel) + ")"
	}
	return out
}

// signed writes x with its sign and three significant digits, in plain
// digits up to a billion: "+12", "-0.5", "+1234".
func signed(x float64) string {
	if x == 0 {
		return "0"
	}
	var s string
	if a := math.Abs(x); a >= 1000 && a < 1e9 {
		s = strconv.FormatFloat(x, 'f', 0, 64)
	} else {
		s = strconv.FormatFloat(x, 'g', 3, 64)
	}
	if x > 0 {
		s = "+" + s
	}
	return s
}

// signedPercent writes a share as a signed percentage: "+25%".
func signedPercent(f float64) string {
	if f == 0 {
		return "0%"
	}
	return signed(f*100) + "%"
}

// percent writes a share as a percentage: "10%".
func percent(f float64) string {
	return strconv.FormatFloat(f*100, 'g', 3, 64) + "%"
}
