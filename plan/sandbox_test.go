package plan

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

// The workers these tests start are the test binary itself: package plan's
// init function serves as a worker when the sandbox asks (sandbox.go), so
// no TestMain is needed here or in any package whose tests validate plans.

// TestSandboxLimits checks that a CUE plan that computes forever, and one
// that takes all memory, get an error naming the limit, that the workers
// evaluating them are gone, and that the plans after them are evaluated by
// a new worker.
func TestSandboxLimits(t *testing.T) {
	quick, err := NewValidator(WithLimits(Limits{CUETimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	small, err := NewValidator(WithLimits(Limits{CUETimeout: time.Minute, CUEMemory: 64 << 20}))
	if err != nil {
		t.Fatal(err)
	}
	cuePlan := string(mustRead(t, "testdata/base.cue"))
	for _, tt := range []struct {
		v    *Validator
		name string
		data []byte
		want string
	}{
		{quick, "loop.cue", plantest.CUELoop(2, 4000), "loop.cue: CUE evaluation took longer than 1s (limit: plans.cueTimeout)"},
		{small, "memory.cue", plantest.CUEMemoryBomb(40), "memory.cue: CUE evaluation needed more than 64 MiB of memory (limit: plans.cueMemory)"},
		{quick, "bad.cue", []byte(strings.Replace(cuePlan, `soak:       "2h"`, `soak:       "2 hours"`, 1)),
			`bad.cue:21:15: spec.phases.1.soak: invalid value "2 hours" (expected a Go duration such as 90s, 5m or 24h)`},
		{small, "bad.cue", []byte(strings.Replace(cuePlan, `soak:       "2h"`, `soak:       "2 hours"`, 1)),
			`bad.cue:21:15: spec.phases.1.soak: invalid value "2 hours" (expected a Go duration such as 90s, 5m or 24h)`},
	} {
		start := time.Now()
		set := tt.v.Validate([]Source{{Path: tt.name, Data: tt.data}})
		if got := set.Errors.Error(); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: took %s", tt.name, d)
		}
	}
	// Plans that compute and are valid come back whole, with the
	// positions of their name and target.
	p, err := quick.ValidateOne(Source{Path: "p.cue", Data: []byte(cuePlan)})
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := p.Locate("spec.target.phase"); p.Metadata.Name != "base" || p.File != "p.cue" || line == 0 {
		t.Errorf("plan %q from %s, target at line %d", p.Metadata.Name, p.File, line)
	}
}

// TestWorkerKilledAtDeadline checks that a worker past its deadline is not
// left running.
func TestWorkerKilledAtDeadline(t *testing.T) {
	w, err := startWorker("", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.do(workRequest{Path: "loop.cue", Data: plantest.CUELoop(2, 4000)}, 500*time.Millisecond)
	if !errors.Is(err, errTimeout) {
		t.Fatalf("err %v, want a timeout", err)
	}
	select {
	case <-w.exited: // reaped: the process is gone
	default:
		t.Fatalf("worker %d still running", w.cmd.Process.Pid)
	}
	if st := w.cmd.ProcessState; st.String() != "signal: killed" {
		t.Errorf("worker %d: %s, want killed", w.cmd.Process.Pid, st)
	}
}

// TestSandboxWithoutWorker checks that when no worker can run, the plans
// that need one get an error saying so, and are not evaluated in process.
func TestSandboxWithoutWorker(t *testing.T) {
	v := newValidator(t)
	bad := []byte(strings.Replace(readBase(t), "soak: 2h", "soak: 2 hours", 1))
	for _, tt := range []struct{ exe, want string }{
		{"/nonexistent", "p.yaml: cannot evaluate: the CUE worker cannot start: fork/exec /nonexistent: no such file or directory"},
		{"/bin/true", "p.yaml: cannot evaluate: the CUE worker did not start: exit status 0"},
	} {
		v.sandbox.exe = tt.exe
		set := v.Validate([]Source{{Path: "p.yaml", Data: bad}, {Path: "ok.yaml", Data: []byte(readBase(t))}})
		if got := set.Errors.Error(); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.exe, got, tt.want)
		}
		// A plan the compiled check proves valid needs no worker.
		if len(set.Plans) != 1 {
			t.Errorf("%s: %d plans, want the valid one", tt.exe, len(set.Plans))
		}
	}
}

// TestClose checks that Close stops the idle workers, and that the
// Validator starts another when it needs one again.
func TestClose(t *testing.T) {
	v := newValidator(t)
	bad := Source{Path: "p.yaml", Data: []byte(strings.Replace(readBase(t), "soak: 2h", "soak: 2 hours", 1))}
	if set := v.Validate([]Source{bad}); len(set.Errors) != 1 {
		t.Fatalf("errors: %v", set.Errors)
	}
	idle := append([]*worker(nil), v.sandbox.idle...)
	if len(idle) != 1 {
		t.Fatalf("%d idle workers, want 1", len(idle))
	}
	v.Close()
	select {
	case <-idle[0].exited:
	default:
		t.Fatal("Close returned before the worker exited")
	}
	if set := v.Validate([]Source{bad}); len(set.Errors) != 1 {
		t.Errorf("after Close: %v", set.Errors)
	}
	v.Close()
}
