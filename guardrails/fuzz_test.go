package guardrails_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
)

// FuzzQueryResponse feeds arbitrary bodies to the instant-query path as the
// server's answer: whatever comes back, Query must not panic, and must give
// exactly one of a number (never NaN), no data, or an error.
func FuzzQueryResponse(f *testing.F) {
	for _, s := range []string{
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1700000000,"0.5"]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{"x":"y"},"value":[1,"2"]}]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":[1700000000,"+Inf"]}}`,
		`{"status":"success","data":{"resultType":"string","result":[1700000000,"hello"]}}`,
		`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1","buckets":[[0,"0","1","1"]]}]}]}}`,
		`{"status":"success","data":{"resultType":"vector","result":[null]}}`,
		`{"status":"success","data":{"resultType":"scalar","result":null}}`,
		`{"status":"error","errorType":"bad_data","error":"parse error"}`,
		`{"status":"success","warnings":["w"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0"]}]}}`,
		`not json`,
		``,
	} {
		f.Add(s)
	}
	var mu sync.Mutex
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b := body
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, b)
	}))
	defer srv.Close()
	p, err := guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: srv.URL, Timeout: plan.Duration(5 * time.Second)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mu.Lock()
		body = s
		mu.Unlock()
		v, err := p.Query(context.Background(), "q", time.Unix(1700000000, 0))
		switch {
		case err == nil:
			if math.IsNaN(v) {
				t.Fatalf("%q: NaN returned as a value", s)
			}
		case errors.Is(err, guardrails.ErrNoData):
			if v != 0 {
				t.Fatalf("%q: no data with a value %g", s, v)
			}
		case err.Error() == "":
			t.Fatalf("%q: an error without a message", s)
		}
	})
}
