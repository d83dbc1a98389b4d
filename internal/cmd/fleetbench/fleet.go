package main

import (
	"sort"
	"sync"
	"time"
)

// fleet is what the harness knows of each migration, by index: when its
// target was changed, when the first write to its workloads came after
// that, and when it completed. The watches of the workloads feed it; both
// tools are timed by the same code, from events seen by the same kind of
// client, so the watch's own delay counts alike.
type fleet struct {
	mu       sync.Mutex
	armed    []bool      // a change is under way: the next write counts
	changed  []time.Time // when the change was made (the API call or the push returned)
	written  []time.Time // the first workload write after the change
	complete []time.Time
	// last is the last workload write seen, armed or not: a fleet at
	// rest has none.
	last time.Time
}

func newFleet(n int) *fleet {
	return &fleet{armed: make([]bool, n), changed: make([]time.Time, n), written: make([]time.Time, n), complete: make([]time.Time, n)}
}

// arm starts a measurement for the migrations in idx: before the change is
// made, so that no write is missed; changedAt then says when it was made.
func (f *fleet) arm(idx []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range idx {
		f.armed[i] = true
		f.written[i], f.complete[i], f.changed[i] = time.Time{}, time.Time{}, time.Time{}
	}
}

func (f *fleet) changedAt(idx []int, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range idx {
		f.changed[i] = at
	}
}

// wrote records a write to migration i's workloads, seen at.
func (f *fleet) wrote(i int, at time.Time) {
	if i < 0 || i >= len(f.armed) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = at
	if f.armed[i] && f.written[i].IsZero() {
		f.written[i] = at
	}
}

// quietFor is how long ago the last workload write was seen.
func (f *fleet) quietFor(now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return now.Sub(f.last)
}

// completed records that migration i stands where its new target says.
func (f *fleet) completed(i int, at time.Time) {
	if i < 0 || i >= len(f.armed) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.armed[i] && !f.written[i].IsZero() && f.complete[i].IsZero() {
		f.complete[i] = at
	}
}

// disarm ends the measurement of idx.
func (f *fleet) disarm(idx []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range idx {
		f.armed[i] = false
	}
}

// counts says how many of idx have been written to and completed.
func (f *fleet) counts(idx []int) (written, complete int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range idx {
		if !f.written[i].IsZero() {
			written++
		}
		if !f.complete[i].IsZero() {
			complete++
		}
	}
	return written, complete
}

// reactions are the times from change to first write of idx, in seconds,
// sorted; a write seen before the change call returned counts as 0.
func (f *fleet) reactions(idx []int) []float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []float64
	for _, i := range idx {
		if f.written[i].IsZero() || f.changed[i].IsZero() {
			continue
		}
		out = append(out, max(0, f.written[i].Sub(f.changed[i]).Seconds()))
	}
	sort.Float64s(out)
	return out
}

// span is the time from the first change of idx to the last completion,
// and the durations change → complete, sorted.
func (f *fleet) span(idx []int) (wall float64, each []float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first, last time.Time
	for _, i := range idx {
		if f.changed[i].IsZero() || f.complete[i].IsZero() {
			continue
		}
		if first.IsZero() || f.changed[i].Before(first) {
			first = f.changed[i]
		}
		if f.complete[i].After(last) {
			last = f.complete[i]
		}
		each = append(each, f.complete[i].Sub(f.changed[i]).Seconds())
	}
	sort.Float64s(each)
	if first.IsZero() {
		return 0, nil
	}
	return last.Sub(first).Seconds(), each
}

// quantile is the q-quantile of sorted xs (nearest rank), 0 if empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}
