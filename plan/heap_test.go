package plan

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// heapMB returns the live heap after a full collection.
func heapMB() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20)
}

// churn validates n plans that all need CUE: a third invalid YAML plans, a
// third CUE plans, a third JSON plans with a reference the compiled check
// cannot read.
func churn(t testing.TB, v *Validator, n int, report func(i int)) {
	base := readBase(t)
	cueSrc := string(mustRead(t, "testdata/base.cue"))
	for i := range n {
		var src Source
		switch i % 3 {
		case 0:
			src = Source{Path: "bad.yaml", Data: []byte(strings.Replace(base, "soak: 2h", fmt.Sprintf("soak: %d hours", i), 1))}
		case 1:
			src = Source{Path: "p.cue", Data: []byte(strings.Replace(cueSrc, `name: "base"`, fmt.Sprintf(`name: "plan-%d"`, i), 1))}
		default:
			src = Source{Path: "p.cue", Data: []byte(strings.Replace(cueSrc, "percentage: 10", fmt.Sprintf("percentage: %d & >=0", i%20), 1))}
		}
		v.Validate([]Source{src})
		if report != nil {
			report(i + 1)
		}
	}
}

// newLocalValidator returns a Validator that evaluates in this process, as
// a CUE worker's does.
func newLocalValidator(t testing.TB) *Validator {
	t.Helper()
	v, err := NewValidator(evaluateHere())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestHeapStaysFlat checks that a long-lived Validator does not keep what
// CUE evaluated: contexts are replaced every recycleAfter plans. A worker
// process does this (see sandbox.go), so the Validator is local.
func TestHeapStaysFlat(t *testing.T) {
	v := newLocalValidator(t)
	var early, late float64
	churn(t, v, 3000, func(i int) {
		switch i {
		case 600:
			early = heapMB()
		case 3000:
			late = heapMB()
		}
	})
	t.Logf("live heap after 600 plans: %.1f MiB, after 3000: %.1f MiB", early, late)
	if late > early+16 {
		t.Errorf("live heap grew from %.1f MiB to %.1f MiB over 2,400 plans", early, late)
	}
}

// BenchmarkHeap10000 validates 10,000 plans that need CUE with one local
// Validator, as a CUE worker does over its life, and reports the live heap
// at the start and at the end.
func BenchmarkHeap10000(b *testing.B) {
	for b.Loop() {
		v := newLocalValidator(b)
		var start, end float64
		churn(b, v, 10000, func(i int) {
			switch i {
			case 1000:
				start = heapMB()
			case 10000:
				end = heapMB()
			}
		})
		b.ReportMetric(start, "MiB-heap@1k")
		b.ReportMetric(end, "MiB-heap@10k")
	}
}
