package guardrails_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails"
)

// fakeProm is an in-process server speaking the Prometheus HTTP API, with
// the answer to each query set by the test.
type fakeProm struct {
	*httptest.Server
	mu      sync.Mutex
	answers map[string]answer
	queries map[string]int // how many times each query was asked
	auth    []string       // the Authorization header of every request
}

// answer is what the fake server sends back to a query.
type answer struct {
	status int    // 200 when zero
	body   string // the whole response body
	delay  time.Duration
}

func newFakeProm(t *testing.T) *fakeProm {
	t.Helper()
	f := &fakeProm{answers: map[string]answer{}, queries: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeProm) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	a, ok := f.answers[q]
	f.queries[q]++
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.mu.Unlock()
	if !ok {
		a = answer{status: 400, body: `{"status":"error","errorType":"bad_data","error":"unknown query"}`}
	}
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if a.status != 0 {
		w.WriteHeader(a.status)
	}
	fmt.Fprint(w, a.body)
}

// set makes the server answer query with a.
func (f *fakeProm) set(query string, a answer) {
	f.mu.Lock()
	f.answers[query] = a
	f.mu.Unlock()
}

func (f *fakeProm) asked(query string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[query]
}

// vector is a successful instant-vector answer with one series per value,
// labelled i="0", i="1", ...
func vector(values ...string) answer {
	var parts []string
	for i, v := range values {
		parts = append(parts, fmt.Sprintf(`{"metric":{"i":"%d"},"value":[1700000000,%q]}`, i, v))
	}
	return answer{body: `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(parts, ",") + `]}}`}
}

func scalar(v string) answer {
	return answer{body: `{"status":"success","data":{"resultType":"scalar","result":[1700000000,` + strconv.Quote(v) + `]}}`}
}

// prometheus returns a provider for the fake server.
func (f *fakeProm) prometheus(t *testing.T, cfg guardrails.PrometheusConfig) *guardrails.Prometheus {
	t.Helper()
	cfg.URL = f.URL
	p, err := guardrails.NewPrometheus(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
