package reconcile

import (
	"fmt"
	"math"
	"strconv"
)

// Comparison is a guardrail's judgment of the candidate against stable:
// both sides' values, how far apart they are and, for a statistical test,
// its p-value and shift estimate.
type Comparison struct {
	// Stable and Candidate are each side's value: per unit of traffic
	// share when PerShare is set, and each side's median under a test.
	Stable    float64 `json:"stable"`
	Candidate float64 `json:"candidate"`
	// Relative is Candidate - Stable as a share of Stable; absent when
	// Stable is 0.
	Relative *float64 `json:"relative,omitempty"`
	PerShare bool     `json:"perShare,omitempty"`
	// Test is the statistical test judged with ("mann-whitney"), PValue
	// its one-sided p-value that the candidate is worse, Shift its
	// estimate of the candidate's shift from stable (Hodges–Lehmann), and
	// StableSamples and CandidateSamples how many samples it judged.
	Test             string   `json:"test,omitempty"`
	PValue           *float64 `json:"pValue,omitempty"`
	Shift            *float64 `json:"shift,omitempty"`
	StableSamples    int      `json:"stableSamples,omitempty"`
	CandidateSamples int      `json:"candidateSamples,omitempty"`
	Verdict          Verdict  `json:"verdict"`
}

// Verdict is what a comparison concludes.
type Verdict string

// Verdicts of a comparison. Inconclusive (too few samples, a side with no
// data) counts as no data, which the plan's onNoData decides about.
const (
	Pass         Verdict = "Pass"
	Fail         Verdict = "Fail"
	Inconclusive Verdict = "Inconclusive"
)

// NewComparison returns the comparison of the two values, Relative set
// when stable is not 0.
func NewComparison(stable, candidate float64) Comparison {
	c := Comparison{Stable: stable, Candidate: candidate}
	if stable != 0 && !math.IsInf(stable, 0) {
		r := (candidate - stable) / math.Abs(stable)
		c.Relative = &r
	}
	return c
}

// Shown is a reading's value as status shows it: the value, or for a
// comparison both sides' and the verdict.
func (r Reading) Shown() string {
	if r.Compare != nil {
		return r.Compare.String() + ": " + string(r.Compare.Verdict)
	}
	return FormatValue(r.Value)
}

// Delta is Candidate - Stable.
func (c Comparison) Delta() float64 { return c.Candidate - c.Stable }

// String says both sides and how far apart they are, as status and commit
// messages show it: "candidate 0.25 vs stable 0.12 (+108%)", with a test
// "candidate median 0.25 vs stable 0.12 (+108%), shift +0.11, p=0.003".
func (c Comparison) String() string {
	median := ""
	if c.Test != "" {
		median = " median"
	}
	s := fmt.Sprintf("candidate%s %s vs stable %s", median, FormatValue(c.Candidate), FormatValue(c.Stable))
	if c.PerShare {
		s += " per share of traffic"
	}
	if c.Relative != nil {
		s += " (" + FormatChange(*c.Relative) + ")"
	} else {
		s += " (" + signed(FormatValue(c.Delta())) + ")"
	}
	if c.Shift != nil {
		s += ", shift " + signed(FormatValue(*c.Shift))
	}
	if c.PValue != nil {
		s += ", p=" + strconv.FormatFloat(*c.PValue, 'g', 2, 64)
	}
	return s
}

// FormatChange writes a relative change as a signed percentage: "+108%",
// "-4.2%", "+0%".
func FormatChange(r float64) string {
	return signed(strconv.FormatFloat(r*100, 'g', 3, 64)) + "%"
}

func signed(s string) string {
	if len(s) > 0 && s[0] != '-' {
		return "+" + s
	}
	return s
}
