package plantest_test

import (
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

func TestGeneratedPlansAreValid(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	paths, err := plantest.WriteDir(t.TempDir(), 300, 7)
	if err != nil {
		t.Fatal(err)
	}
	set, err := v.Load(paths...)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Plans) != len(paths) {
		t.Fatalf("%d plans of %d valid", len(set.Plans), len(paths))
	}
}
