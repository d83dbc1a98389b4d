package testapp

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestErrorRateExact serves runs of requests at several error rates: the
// failing share is the rate exactly, and the failures are spread evenly, so
// two apps told the same rate read the same in Prometheus.
func TestErrorRateExact(t *testing.T) {
	for _, tt := range []struct {
		rate     float64
		requests int
		fails    int
		longest  int // the longest run of successes allowed
	}{
		{0, 100, 0, 100},
		{0.5, 100, 50, 1},
		{0.1, 100, 10, 9},
		{0.03, 1000, 30, 33},
		{1, 20, 20, 0},
	} {
		a := New("v1", Behaviour{ErrorRate: tt.rate})
		h := a.Handler()
		fails, run, longest := 0, 0, 0
		for range tt.requests {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
			if w.Code == http.StatusInternalServerError {
				fails, run = fails+1, 0
				continue
			}
			run++
			longest = max(longest, run)
		}
		if fails != tt.fails || longest > tt.longest {
			t.Errorf("error rate %g over %d requests: %d failed, longest run of successes %d; want %d and at most %d",
				tt.rate, tt.requests, fails, longest, tt.fails, tt.longest)
		}
	}
}
