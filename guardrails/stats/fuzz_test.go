package stats_test

import (
	"encoding/binary"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails/stats"
)

// FuzzMannWhitney feeds arbitrary samples to MannWhitney and Judge, as a
// query's answer could. With raw set every 8 bytes are a float64's bits
// (NaN, ±Inf, subnormals, ±MaxFloat64); otherwise every byte is a sample
// from 0 to 63.75 in quarters, which makes ties. Whatever comes in: no
// panic, an error exactly when a side is empty or not finite, P a
// probability, U within [0, N·M] and mirrored by swapping the sides, the
// shift and the medians within the samples' range, and an answer within
// seconds. The seeds are in testdata/fuzz/FuzzMannWhitney.
func FuzzMannWhitney(f *testing.F) {
	f.Fuzz(func(t *testing.T, stableIn, candidateIn []byte, raw bool) {
		stable, candidate := decode(stableIn, raw), decode(candidateIn, raw)
		start := time.Now()
		r, err := stats.MannWhitney(stable, candidate)
		j := stats.Judge(stable, candidate, stats.Config{Confidence: 0.95, MinEffect: 0.1, MinSamples: 5})
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%d and %d samples took %v", len(stable), len(candidate), d)
		}
		switch j.Verdict {
		case stats.Pass, stats.Fail, stats.Inconclusive:
		default:
			t.Errorf("Judge gave verdict %q", j.Verdict)
		}
		if j.Reason == "" {
			t.Errorf("Judge gave no reason")
		}
		if usable := len(stable) > 0 && len(candidate) > 0 && allFinite(stable) && allFinite(candidate); usable != (err == nil) {
			t.Fatalf("usable samples %v, error %v", usable, err)
		}
		if err != nil {
			return
		}
		nm := float64(len(stable)) * float64(len(candidate))
		if !(r.P >= 0 && r.P <= 1) || !(r.U >= 0 && r.U <= nm) || r.U*2 != math.Trunc(r.U*2) {
			t.Fatalf("P %v, U %v of %v pairs", r.P, r.U, nm)
		}
		s, c := slices.Clone(stable), slices.Clone(candidate)
		slices.Sort(s)
		slices.Sort(c)
		if lo, hi := c[0]-s[len(s)-1], c[len(c)-1]-s[0]; !(r.Shift >= lo && r.Shift <= hi) {
			t.Fatalf("shift %v outside [%v, %v]", r.Shift, lo, hi)
		}
		if !(r.StableMedian >= s[0] && r.StableMedian <= s[len(s)-1]) || !(r.CandidateMedian >= c[0] && r.CandidateMedian <= c[len(c)-1]) {
			t.Fatalf("medians %v and %v outside their samples", r.StableMedian, r.CandidateMedian)
		}
		swapped, err := stats.MannWhitney(candidate, stable)
		if err != nil {
			t.Fatal(err)
		}
		if swapped.U+r.U != nm || swapped.Shift != -r.Shift+0 {
			t.Fatalf("swapping the sides: U %v and %v of %v pairs, shift %v and %v", r.U, swapped.U, nm, r.Shift, swapped.Shift)
		}
	})
}

// decode turns fuzz bytes into samples: 8 bytes a float64 when raw, else
// a byte a quarter-step value.
func decode(b []byte, raw bool) []float64 {
	var xs []float64
	if raw {
		for ; len(b) >= 8; b = b[8:] {
			xs = append(xs, math.Float64frombits(binary.LittleEndian.Uint64(b)))
		}
		return xs
	}
	for _, x := range b {
		xs = append(xs, float64(x)/4)
	}
	return xs
}

func allFinite(xs []float64) bool {
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}
