package main

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	for _, c := range []struct {
		xs   []float64
		q    float64
		want float64
	}{
		{nil, 0.5, 0},
		{[]float64{7}, 0.99, 7},
		{xs, 0.5, 50},
		{xs, 0.99, 99},
		{xs, 1, 100},
		{[]float64{1, 2, 3}, 0.5, 2},
	} {
		if got := quantile(c.xs, c.q); got != c.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.xs, c.q, got, c.want)
		}
	}
}

// TestFleet: a write counts only once armed and once per change, a
// completion only after a write; reactions and spans come from those.
func TestFleet(t *testing.T) {
	f := newFleet(3)
	t0 := time.Unix(1000, 0)
	f.wrote(0, t0) // not armed: a write at rest does not count
	f.arm([]int{0, 1})
	f.completed(0, t0) // no write yet: a stale status does not count
	f.changedAt([]int{0}, t0)
	f.changedAt([]int{1}, t0.Add(time.Second))
	f.wrote(0, t0.Add(2*time.Second))
	f.wrote(0, t0.Add(5*time.Second)) // only the first
	f.wrote(1, t0.Add(1500*time.Millisecond))
	f.wrote(2, t0) // not armed
	f.wrote(7, t0) // no such migration
	f.completed(0, t0.Add(30*time.Second))
	f.completed(1, t0.Add(41*time.Second))
	if w, c := f.counts([]int{0, 1, 2}); w != 2 || c != 2 {
		t.Fatalf("counts = %d written, %d complete; want 2, 2", w, c)
	}
	if r := f.reactions([]int{0, 1}); len(r) != 2 || r[0] != 0.5 || r[1] != 2 {
		t.Errorf("reactions = %v, want [0.5 2]", r)
	}
	wall, each := f.span([]int{0, 1})
	if wall != 41 || len(each) != 2 || each[0] != 30 || each[1] != 40 {
		t.Errorf("span = %v, %v; want 41, [30 40]", wall, each)
	}
}

func TestIndex(t *testing.T) {
	for name, want := range map[string]int{"r-0042": 42, "s-0007": 7, "c-0999": 999, "r-0042-5d8f7c": 42, "kube-root-ca": -1, "x": -1} {
		if got := index(name); got != want {
			t.Errorf("index(%q) = %d, want %d", name, got, want)
		}
	}
}

func TestScrapeLine(t *testing.T) {
	line := `apiserver_flowcontrol_dispatched_requests_total{flow_schema="fleetbench-hal9",priority_level="exempt"} 1234`
	if got := label(line, "flow_schema"); got != "fleetbench-hal9" {
		t.Errorf("label = %q", got)
	}
	if got := sampleValue(line); got != 1234 {
		t.Errorf("value = %v", got)
	}
}
