package plan_test

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

// BenchmarkLoad1000 validates 1,000 generated plans from disk per iteration,
// as `plan vet` does (which also raises GOGC to 400 for its short run).
func BenchmarkLoad1000(b *testing.B) {
	dir := b.TempDir()
	if _, err := plantest.WriteDir(dir, 1000, 1); err != nil {
		b.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	v, err := plan.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		set, err := v.Load(dir)
		if err != nil || len(set.Plans) != 1000 {
			b.Fatalf("%d plans: %v", len(set.Plans), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/plan")
}

// BenchmarkValidateOne is the cost of one plan on one core.
func BenchmarkValidateOne(b *testing.B) {
	v, err := plan.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	data := plantest.Generate(newRand(), "one")
	for b.Loop() {
		if _, err := v.ValidateOne(plan.Source{Path: "one.yaml", Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	_ = runtime.GOMAXPROCS(0)
}
