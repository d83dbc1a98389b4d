package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan/plantest"
	"github.com/hal9ai/hal9-migrate/schema"
)

// BenchmarkVetVsCueVet runs `hal9-migrate plan vet` and `cue vet` (v0.17.1)
// as processes on the same 1,000 generated plans, one after the other in
// each iteration, and reports both times and the ratio. CUE_BIN names the
// cue binary; `make bench` installs it.
func BenchmarkVetVsCueVet(b *testing.B) {
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "plans"), 0o755); err != nil {
		b.Fatal(err)
	}
	paths, err := plantest.WriteDir(filepath.Join(dir, "plans"), 1000, 1)
	if err != nil {
		b.Fatal(err)
	}
	schemaFile := filepath.Join(dir, "plan.cue")
	if err := os.WriteFile(schemaFile, schema.Source, 0o644); err != nil {
		b.Fatal(err)
	}
	self := filepath.Join(dir, "hal9-migrate")
	if out, err := exec.Command("go", "build", "-o", self, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	cue := os.Getenv("CUE_BIN")
	if cue == "" {
		b.Fatal("set CUE_BIN to a cue v0.17.1 binary (make bench installs one)")
	}

	run := func(name string, args ...string) time.Duration {
		start := time.Now()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", name, err, out)
		}
		return time.Since(start)
	}
	var ours, theirs time.Duration
	for b.Loop() {
		ours += run(self, "plan", "vet", filepath.Join(dir, "plans"))
		theirs += run(cue, append([]string{"vet", "-d", schema.Definition, schemaFile}, paths...)...)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ours.Milliseconds())/n, "ms/plan-vet")
	b.ReportMetric(float64(theirs.Milliseconds())/n, "ms/cue-vet")
	b.ReportMetric(float64(theirs)/float64(ours), "x-faster")
}
