package reconcile

import "testing"

func TestComparisonString(t *testing.T) {
	p, shift := 0.003, 0.11
	tests := []struct {
		c    Comparison
		want string
	}{
		{NewComparison(0.12, 0.25), "candidate 0.25 vs stable 0.12 (+108%)"},
		{NewComparison(100, 95.8), "candidate 95.8 vs stable 100 (-4.2%)"},
		{NewComparison(0, 0.01), "candidate 0.01 vs stable 0 (+0.01)"},
		{func() Comparison {
			c := NewComparison(90, 100)
			c.PerShare = true
			return c
		}(), "candidate 100 vs stable 90 per share of traffic (+11.1%)"},
		{func() Comparison {
			c := NewComparison(0.12, 0.25)
			c.Test, c.PValue, c.Shift = "mann-whitney", &p, &shift
			return c
		}(), "candidate median 0.25 vs stable 0.12 (+108%), shift +0.11, p=0.003"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	c := NewComparison(1, 2)
	c.Verdict = Fail
	if got := (Reading{Value: 2, Compare: &c}).Shown(); got != "candidate 2 vs stable 1 (+100%): Fail" {
		t.Errorf("shown = %q", got)
	}
	if got := (Reading{Value: 0.5}).Shown(); got != "0.5" {
		t.Errorf("shown = %q", got)
	}
}
