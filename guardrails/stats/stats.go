// Package stats judges a candidate against its stable baseline from samples
// of the same metric on each side: MannWhitney runs a one-sided Mann-Whitney
// U test (Wilcoxon rank-sum) of "the candidate's values are greater" and
// estimates the shift between the sides (Hodges–Lehmann); Judge turns that
// into Pass, Fail or Inconclusive for a comparison guardrail, with the
// confidence, the least effect worth failing for, the least number of
// samples and the direction a plan asks for.
//
// A rank test suits latencies: it assumes no distribution, one very slow
// request counts as one rank however slow it is, and a histogram's or a
// millisecond timer's ties are counted exactly. Small samples get the exact permutation
// distribution of the ranks, ties included; larger ones the normal
// approximation with the tie and continuity corrections.
//
// The samples come from outside (a query's answer), so the work is bounded
// whatever their number: sorting both sides, one pass to rank them and at
// most 66 for the shift, O((N+M) log(N+M)) time and O(N+M) memory (two
// sides of 100,000 samples take about 40 ms), and the exact distribution
// only while its table stays under 2^20 cells of work (about 0.4 ms).
//
// The package does not fetch samples, read plans or keep state: it is pure
// arithmetic on the slices it is given, which it does not modify.
package stats
