package stats

// The exact null distribution of the rank sum, ties included.
//
// With no difference between the sides, every way of choosing which k of the
// T = N+M pooled samples belong to one side is equally likely, so the
// p-value is the share of the C(T, k) subsets of the (doubled, hence
// integer) ranks whose sum is at least as extreme as the observed one. A
// table counts, for each subset size j ≤ k and each sum, the subsets of the
// ranks seen so far with that size and sum, adding the ranks one at a time
// (the shift algorithm of Streitberg and Röhmel, 1986). The smaller side is
// counted, and the ranks are divided by their greatest common divisor
// (2 when there are no ties), which keeps the table small.
//
// The counts are float64. They reach C(T, k), past 2^53 from T = 57, so
// they are not always exact integers, but every count is a sum of
// non-negative terms, added at most T times: its relative error is under
// T·2⁻⁵³ (about 10⁻¹³ for any table the budget allows), and so is the
// p-value's. No subtraction ever cancels. math/big would buy exact digits
// nobody reads, at many times the cost.

// exactBudget bounds the exact distribution's work, in table cells updated
// (see exactWork): 2^20 cells take about 0.4 ms on one core of the machine
// measured in docs/BENCHMARKS.md. That covers two sides of up to 25 samples
// each with ties (29 without), or a side of 5 against one of 200. Past
// it the normal approximation, with its continuity correction, is within a
// few thousandths of the exact p-value, and costs microseconds.
const exactBudget = 1 << 20

// exactMaxTotal is the most pooled samples the exact distribution is
// considered for. The budget rules out more anyway (the table's work grows
// at least as fast as T²·k); this bound only spares the larger inputs the
// bookkeeping of their tie groups.
const exactMaxTotal = 2000

// exactP returns the exact one-sided p-value P(U ≥ observed U) for sides of
// n stable and m candidate samples ranked as rk, and true; or false when
// the exact distribution costs more than exactBudget.
func exactP(rk ranks, n, m int) (float64, bool) {
	if rk.groups == nil {
		return 0, false
	}
	t := n + m
	// The ranks, smallest first, divided by their common divisor.
	var g int64
	for _, grp := range rk.groups {
		g = gcd(g, grp.rank2)
	}
	a := make([]int64, 0, t)
	for _, grp := range rk.groups {
		for range grp.size {
			a = append(a, grp.rank2/g)
		}
	}
	k := min(n, m)
	if exactWork(a, k) > exactBudget {
		return 0, false
	}
	sum := rk.candidateSum2 / g
	if k == m {
		return rankSumTail(a, k, sum, true), true
	}
	// Count the stable side instead: a candidate sum at least sum is a
	// stable sum at most the total less sum.
	var total int64
	for _, x := range a {
		total += x
	}
	return rankSumTail(a, k, total-sum, false), true
}

// exactWork is an upper bound on the table cells rankSumTail updates for k
// of the ranks a (sorted ascending): each of the len(a) ranks updates, at
// most, every sum of every subset size below k.
func exactWork(a []int64, k int) int64 {
	var lo, hi, cells int64
	for j := range k {
		cells += hi - lo + 1
		lo += a[j]
		hi += a[len(a)-1-j]
	}
	return int64(len(a)) * cells
}

// rankSumTail returns the share of the k-subsets of a (sorted ascending)
// whose sum is at least x (upper) or at most x (!upper).
func rankSumTail(a []int64, k int, x int64, upper bool) float64 {
	t := len(a)
	// f[j][s-lo[j]] counts the j-subsets of the ranks added so far with
	// sum s; lo[j] and hi[j] are the least and greatest sums of j ranks of
	// all of a, and reach[j] the greatest of those added so far.
	lo := make([]int64, k+1)
	hi := make([]int64, k+1)
	for j := 1; j <= k; j++ {
		lo[j] = lo[j-1] + a[j-1]
		hi[j] = hi[j-1] + a[t-j]
	}
	cells := int64(0)
	for j := range k + 1 {
		cells += hi[j] - lo[j] + 1
	}
	buf := make([]float64, cells)
	f := make([][]float64, k+1)
	for j := range k + 1 {
		w := hi[j] - lo[j] + 1
		f[j], buf = buf[:w:w], buf[w:]
	}
	reach := make([]int64, k+1)
	f[0][0] = 1
	for i, r := range a {
		// Sizes below first can no longer grow to k with the ranks left;
		// their counts go stale, and nothing reads them again.
		first := max(1, k-(t-1-i))
		for j := min(i+1, k); j >= first; j-- {
			src := f[j-1][:reach[j-1]-lo[j-1]+1]
			dst := f[j][lo[j-1]+r-lo[j]:]
			dst = dst[:len(src)]
			for s, v := range src {
				dst[s] += v
			}
			reach[j] = reach[j-1] + r
		}
	}
	// Sum the tail first and the rest after, so that the total is never
	// less than the tail and P never over 1.
	dist := f[k]
	var tail, all float64
	if upper {
		for s := len(dist) - 1; s >= 0; s-- {
			if lo[k]+int64(s) == x-1 {
				tail = all
			}
			all += dist[s]
		}
		if x <= lo[k] {
			tail = all
		}
	} else {
		for s := range dist {
			if lo[k]+int64(s) == x+1 {
				tail = all
			}
			all += dist[s]
		}
		if x >= hi[k] {
			tail = all
		}
	}
	return tail / all
}

// gcd is the greatest common divisor of a ≥ 0 and b > 0.
func gcd(a, b int64) int64 {
	for a != 0 {
		a, b = b%a, a
	}
	return b
}
