//go:build linux

package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

// TestVetHostilePlans runs `hal9-migrate plan vet` as a process on each
// plan that used to stop it or the daemon, generated here, and checks that
// each is refused with an error naming the file (or skipped, for a file of
// another kind found in the folder), within 10 s and 1 GiB. The peak is
// Linux's rusage of the waited process: the largest resident size of vet
// and of the CUE workers it waited for, and also of this test process when
// it started vet (a child started with vfork counts its parent's), so it
// is an upper bound.
func TestVetHostilePlans(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	self := filepath.Join(dir, "hal9-migrate")
	if out, err := exec.Command("go", "build", "-o", self, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		file string
		data func() []byte // made when the case runs: see the peak above
		all  bool          // vet the folder rather than the file
		want string        // a regular expression the output must match
	}{
		{"aliases.yaml", func() []byte { return plantest.AliasBomb("MigrationPlan", 9, 10) }, false,
			`^plans/aliases.yaml:9:38: x.4.7: YAML aliases expand past 100000 nodes \(limit: plans.maxNodes\)$`},
		{"merge.yaml", func() []byte { return plantest.MergeBomb(9, 10) }, false,
			`^plans/merge.yaml:9:45: x.4: YAML aliases expand past 100000 nodes \(limit: plans.maxNodes\)$`},
		{"not-a-plan.yaml", func() []byte { return plantest.AliasBomb("NotAPlan", 9, 10) }, false,
			`^plans/not-a-plan.yaml:2:7: kind: invalid value "NotAPlan" \(expected "MigrationPlan"\)$`},
		{"not-a-plan-found.yaml", func() []byte { return plantest.AliasBomb("NotAPlan", 9, 10) }, true, `^no plan files in plans$`},
		// 16M phases: CUE would compute for hours, and its memory grows
		// while it does, so either limit may stop it first.
		{"loop.cue", func() []byte { return plantest.CUELoop(2, 4000) }, false,
			`^plans/loop.cue: CUE evaluation (took longer than 5s \(limit: plans.cueTimeout\)|needed more than 256 MiB of memory \(limit: plans.cueMemory\))$`},
		{"memory.cue", func() []byte { return plantest.CUEMemoryBomb(40) }, false,
			`^plans/memory.cue: CUE evaluation needed more than 256 MiB of memory \(limit: plans.cueMemory\)$`},
		{"smuggled.json", func() []byte { return plantest.JSONWithCUE() }, false,
			`^plans/smuggled.json:6:17: invalid JSON: `},
		{"deep.yaml", func() []byte { return plantest.DeepYAML(9990) }, false,
			`^plans/deep.yaml:5:14: spec.features.a: invalid value \(a mapping\) \(expected an integer >= 0 and <= 100\)$`},
		// Last: the test process keeps the 20 MB it made as its peak.
		{"flags.yaml", func() []byte { return plantest.ManyFlags("flags", 400_000) }, false,
			`^plans/flags.yaml: 2\d.\d MiB is over the 1 MiB limit for one plan file \(limit: plans.maxFileSize\)$`},
	} {
		t.Run(tt.file, func(t *testing.T) {
			plans := filepath.Join(dir, tt.file+".d", "plans")
			if err := os.MkdirAll(plans, 0o755); err != nil {
				t.Fatal(err)
			}
			data := tt.data()
			if err := os.WriteFile(filepath.Join(plans, tt.file), data, 0o644); err != nil {
				t.Fatal(err)
			}
			// Past the limits under test, stop it rather than the machine.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			arg := "plans/" + tt.file
			if tt.all {
				arg = "plans"
			}
			cmd := exec.CommandContext(ctx, self, "plan", "vet", arg)
			cmd.Dir = filepath.Dir(plans)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			var exit *exec.ExitError
			switch {
			case tt.all && err != nil:
				t.Fatalf("exit: %v, want status 0\n%s", err, out)
			case !tt.all && (!errors.As(err, &exit) || exit.ExitCode() != 1):
				t.Fatalf("exit: %v, want status 1\n%s", err, out)
			}
			if !regexp.MustCompile(`(?m)` + tt.want).Match(out) {
				t.Errorf("output:\n%s\nwant a line matching %s", out, tt.want)
			}
			peak := int64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) << 10
			t.Logf("%d bytes: %s, peak %d MiB resident", len(data), took.Round(time.Millisecond), peak>>20)
			if took > 10*time.Second {
				t.Errorf("took %s, want under 10s", took)
			}
			if peak > 1<<30 {
				t.Errorf("peak resident size %d MiB, want under 1 GiB", peak>>20)
			}
		})
	}
}
