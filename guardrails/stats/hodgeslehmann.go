package stats

import "math"

// hodgesLehmann returns the median of the differences c[j] - s[i] over every
// pair, for s and c sorted ascending and not empty.
//
// There are N·M differences, 10¹⁰ for two sides of 100,000 samples, so they
// are never listed. The k-th smallest is found by bisection over the
// float64 values themselves: for a candidate value d, one merge-like pass
// counts the differences ≤ d in O(N+M), since c[j] - s[i] grows with j and
// shrinks with i (rounding keeps that order). A float64 has 2⁶⁴ bit
// patterns, so at most 64 passes find the least d with at least k
// differences ≤ d, which is that difference exactly: no tolerance, and the
// same answer whatever the samples' scale. An even count's median also
// needs the next difference up, which one more pass finds.
func hodgesLehmann(s, c []float64) float64 {
	total := int64(len(s)) * int64(len(c))
	k := (total + 1) / 2
	lo := kthDifference(s, c, k)
	if total%2 == 1 {
		return lo + 0
	}
	hi := lo
	if countAtMost(s, c, lo) == k {
		hi = nextDifference(s, c, lo)
	}
	return mean2(lo, hi)
}

// kthDifference returns the k-th smallest (from 1) of the differences
// c[j] - s[i].
func kthDifference(s, c []float64, k int64) float64 {
	lo := orderedBits(c[0] - s[len(s)-1])
	hi := orderedBits(c[len(c)-1] - s[0])
	for lo < hi {
		mid := lo + (hi-lo)/2
		if countAtMost(s, c, fromOrderedBits(mid)) >= k {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return fromOrderedBits(lo)
}

// countAtMost counts the pairs with c[j] - s[i] ≤ d. As s[i] grows, so does
// the number of c[j] within d of it: one pointer walks c once.
func countAtMost(s, c []float64, d float64) int64 {
	var n int64
	j := 0
	for _, x := range s {
		for j < len(c) && c[j]-x <= d {
			j++
		}
		n += int64(j)
	}
	return n
}

// nextDifference returns the least difference c[j] - s[i] greater than d,
// of which there is one. As s[i] grows, so does the first c[j] more than d
// above it: one pointer walks c once.
func nextDifference(s, c []float64, d float64) float64 {
	next := math.Inf(1)
	j := 0
	for _, x := range s {
		for j < len(c) && c[j]-x <= d {
			j++
		}
		if j == len(c) {
			break
		}
		next = min(next, c[j]-x)
	}
	return next
}

// orderedBits maps a float64 (not NaN) to a uint64 in the same order, -0
// just before +0.
func orderedBits(x float64) uint64 {
	b := math.Float64bits(x)
	if b>>63 == 1 {
		return ^b
	}
	return b | 1<<63
}

// fromOrderedBits undoes orderedBits.
func fromOrderedBits(b uint64) float64 {
	if b>>63 == 1 {
		return math.Float64frombits(b &^ (1 << 63))
	}
	return math.Float64frombits(^b)
}
