package stats_test

import (
	"math"
	"testing"

	"github.com/hal9ai/hal9-migrate/guardrails/stats"
)

// seq returns k values from from, step apart.
func seq(k int, from, step float64) []float64 {
	xs := make([]float64, k)
	for i := range xs {
		xs[i] = from + float64(i)*step
	}
	return xs
}

// neg returns the negated values.
func neg(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = -x
	}
	return out
}

func TestJudge(t *testing.T) {
	latency := stats.Config{Confidence: 0.95, MinSamples: 5}
	throughput := stats.Config{Confidence: 0.95, MinSamples: 5, HigherIsBetter: true}
	withEffect := stats.Config{Confidence: 0.95, MinSamples: 5, MinEffect: 0.10}
	nan := math.NaN()
	for _, tc := range []struct {
		name              string
		stable, candidate []float64
		config            stats.Config
		verdict           stats.Verdict
		reason            string
	}{
		{
			"slower candidate", seq(10, 100, 1), seq(10, 125, 1), latency,
			stats.Fail, "candidate worse: shift +25 (+23.9%), p=5.4e-06 < 0.05",
		},
		{
			"faster candidate", seq(10, 125, 1), seq(10, 100, 1), latency,
			stats.Pass, "no significant worsening: shift -25 (-19.3%), p=1 >= 0.05",
		},
		{
			"equal samples", seq(10, 100, 0), seq(8, 100, 0), latency,
			stats.Pass, "no significant worsening: shift 0 (0%), p=1 >= 0.05",
		},
		{
			"overlapping samples", seq(10, 100, 1), seq(10, 101, 1), latency,
			stats.Pass, "no significant worsening: shift +1 (+0.957%), p=0.25 >= 0.05",
		},
		{
			"lower throughput", seq(10, 1000, 10), seq(10, 800, 10), throughput,
			stats.Fail, "candidate worse: shift -200 (-19.1%), p=5.4e-06 < 0.05",
		},
		{
			"higher throughput", seq(10, 800, 10), seq(10, 1000, 10), throughput,
			stats.Pass, "no significant worsening: shift +200 (+23.7%), p=1 >= 0.05",
		},
		{
			"worse by less than minEffect", seq(10, 100, 1), seq(10, 105, 1), withEffect,
			stats.Pass, "candidate worse by less than minEffect 10%: shift +5 (+4.78%), p=0.0016 < 0.05",
		},
		{
			"worse by more than minEffect", seq(10, 100, 1), seq(10, 115, 1), withEffect,
			stats.Fail, "candidate worse: shift +15 (+14.4%), p=5.4e-06 < 0.05",
		},
		{
			"stable's median 0", seq(10, 0, 0), seq(10, 1, 0), withEffect,
			stats.Fail, "candidate worse: shift +1, p=5.4e-06 < 0.05",
		},
		{
			// 4 of 10 candidate samples slower: the ranks say worse,
			// but most differences are 0, and so is the shift.
			"mostly tied, no minEffect", seq(10, 1, 0), append(seq(6, 1, 0), seq(4, 2, 0)...), latency,
			stats.Fail, "candidate worse: shift 0 (0%), p=0.043 < 0.05",
		},
		{
			"mostly tied, minEffect", seq(10, 1, 0), append(seq(6, 1, 0), seq(4, 2, 0)...), withEffect,
			stats.Pass, "candidate ranks worse but its shift does not: shift 0 (0%), p=0.043 < 0.05",
		},
		{
			"too few stable samples", seq(4, 100, 1), seq(10, 100, 1), latency,
			stats.Inconclusive, "too few samples: 4 stable and 10 candidate, 5 each needed",
		},
		{
			"NaN left out", []float64{100, nan, 101, 102, 103, 104, nan}, []float64{130, 131, 132, 133, 134, math.Inf(1)}, latency,
			stats.Fail, "candidate worse: shift +30 (+29.4%), p=0.004 < 0.05; left out 2 stable and 1 candidate samples that are not finite numbers",
		},
		{
			"too few once NaN is left out", []float64{100, nan, 101, 102, 103, nan}, seq(10, 100, 1), latency,
			stats.Inconclusive, "too few samples: 4 stable and 10 candidate, 5 each needed; left out 2 stable samples that are not finite numbers",
		},
		{
			"all NaN", []float64{nan, nan}, []float64{nan}, latency,
			stats.Inconclusive, "too few samples: 0 stable and 0 candidate, 5 each needed; left out 2 stable and 1 candidate samples that are not finite numbers",
		},
		{
			"no samples, no minimum", nil, nil, stats.Config{Confidence: 0.95},
			stats.Inconclusive, "too few samples: 0 stable and 0 candidate, 1 each needed",
		},
		{
			"confidence unset", seq(10, 100, 1), seq(10, 125, 1), stats.Config{},
			stats.Inconclusive, "confidence 0 is not between 0 and 1",
		},
		{
			"confidence as a percentage", seq(10, 100, 1), seq(10, 125, 1), stats.Config{Confidence: 95},
			stats.Inconclusive, "confidence 95 is not between 0 and 1",
		},
		{
			"negative minEffect", seq(10, 100, 1), seq(10, 125, 1), stats.Config{Confidence: 0.95, MinEffect: -0.1},
			stats.Inconclusive, "minEffect -0.1 is not a share of 0 or more",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stable := append([]float64(nil), tc.stable...)
			j := stats.Judge(tc.stable, tc.candidate, tc.config)
			if j.Verdict != tc.verdict || j.Reason != tc.reason {
				t.Errorf("got %s %q\nwant %s %q", j.Verdict, j.Reason, tc.verdict, tc.reason)
			}
			for i := range stable {
				if stable[i] != tc.stable[i] && !math.IsNaN(stable[i]) {
					t.Fatalf("Judge modified its input")
				}
			}
		})
	}
}

// TestJudgeDirection: judging higher-is-better values is judging their
// negation lower-is-better, with the medians and the shift given back in
// the samples' own signs.
func TestJudgeDirection(t *testing.T) {
	for _, tc := range []struct {
		name              string
		stable, candidate []float64
	}{
		{"lower", seq(20, 50, 3), seq(20, 40, 3)},
		{"higher", seq(20, 50, 3), seq(20, 60, 3)},
		{"same", seq(20, 50, 3), seq(20, 50, 3)},
		{"ties", []float64{5, 5, 6, 6, 7, 7, 7}, []float64{4, 5, 5, 5, 6, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := stats.Config{Confidence: 0.9, MinEffect: 0.05, MinSamples: 5}
			h := c
			h.HigherIsBetter = true
			a := stats.Judge(tc.stable, tc.candidate, h)
			b := stats.Judge(neg(tc.stable), neg(tc.candidate), c)
			if a.Verdict != b.Verdict || a.Result.P != b.Result.P || a.Result.U != b.Result.U ||
				a.Result.Shift != -b.Result.Shift+0 || a.Result.StableMedian != -b.Result.StableMedian+0 {
				t.Errorf("higher is better: %s %+v\nnegated, lower is better: %s %+v", a.Verdict, a.Result, b.Verdict, b.Result)
			}
		})
	}
}

// TestJudgeOneSided: a candidate that is only better never fails, however
// strong the evidence, in either direction.
func TestJudgeOneSided(t *testing.T) {
	for _, higher := range []bool{false, true} {
		c := stats.Config{Confidence: 0.95, MinSamples: 5, HigherIsBetter: higher}
		better := seq(200, 50, 0.1)
		if higher {
			better = seq(200, 200, 0.1)
		}
		j := stats.Judge(seq(200, 100, 0.1), better, c)
		if j.Verdict != stats.Pass || j.Result.P < 0.99 {
			t.Errorf("higher is better %v: a better candidate got %s, p=%v", higher, j.Verdict, j.Result.P)
		}
	}
}
