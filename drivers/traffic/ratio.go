package traffic

// Ratio is a split of traffic by replica ratio: how many replicas each side
// runs, and the candidate's share of the traffic that gives.
type Ratio struct {
	Stable, Candidate int
	// Share is the candidate's share, 0..100, of Stable+Candidate,
	// rounded to the nearest point.
	Share int
}

// RatioFor is the replica split nearest traffic percent for a replica
// total of total, for drivers without a router, whose traffic follows the
// replica ratio. It decides; it does not act.
//
// The reachable shares are these:
//
//   - traffic 0 (or less): stable runs the total, the candidate nothing;
//   - traffic 100 (or more), full: the candidate runs the total, stable
//     nothing (decommissioning is the drivers' business);
//   - in between, both sides run at least one replica, as both take
//     traffic: the candidate gets c of n replicas, n the total but at least
//     2, c in 1..n-1, the one whose share c/n is nearest traffic (a tie goes
//     to the larger c).
//
// Worked examples:
//
//	traffic  total   stable  candidate  share
//	   0       4        4        0         0
//	   5       1        1        1        50   one more than the total: both sides take traffic
//	   5       3        2        1        33
//	   5      10        9        1        10   the candidate's one replica is 10%, not 5%
//	  25       4        3        1        25   exact
//	  30       4        3        1        25   1.2 replicas rounds to 1
//	  50       3        1        2        67   1.5 rounds up: a tie goes to the candidate
//	  90       2        1        1        50   stable keeps one replica until full
//	 100       4        0        4       100
//
// A driver that splits this way sets State.ReplicaTotal, and Matches then
// compares the observed share with the one RatioFor reaches for the
// target, exactly: a 5% target at a total of 1 matches an observed 50%
// (what it can reach), and not 0% (the candidate missing) nor 100% (stable
// missing).
func RatioFor(traffic, total int) Ratio {
	total = max(total, 1)
	switch {
	case traffic <= 0:
		return Ratio{Stable: total}
	case traffic >= 100:
		return Ratio{Candidate: total, Share: 100}
	}
	n := max(total, 2)
	c := (traffic*n + 50) / 100
	c = min(max(c, 1), n-1)
	return Ratio{Stable: n - c, Candidate: c, Share: Share(c, n)}
}

// Share is part's share of whole in percent, rounded to the nearest point
// (a half up); 0 of nothing. It is how a driver splitting by replica ratio
// works out the share it observes, the same rounding as RatioFor's.
func Share(part, whole int) int {
	if whole <= 0 {
		return 0
	}
	return (200*part + whole) / (2 * whole)
}

// RatioTolerance is the largest gap, in points, between a target and the
// share RatioFor reaches with total replicas: 49 at a total of 1 or 2, 9 at
// 10.
func RatioTolerance(total int) int {
	worst := 0
	for p := 0; p <= 100; p++ {
		d := RatioFor(p, total).Share - p
		worst = max(worst, d, -d)
	}
	return worst
}
