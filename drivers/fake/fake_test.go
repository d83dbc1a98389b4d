package fake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
)

func harness(newDriver func(t *testing.T) drivers.Driver) drivertest.Harness {
	return drivertest.Harness{
		New:             newDriver,
		SucceedingJob:   plan.Run{Image: "fake", Env: map[string]string{fake.EnvJobDuration: "20ms"}},
		FailingJob:      plan.Run{Image: "fake", Env: map[string]string{fake.EnvJobDuration: "20ms", fake.EnvJobExit: "3"}},
		FailingExitCode: 3,
		SlowJob:         plan.Run{Image: "fake", Env: map[string]string{fake.EnvJobDuration: "1h"}},
		Settle:          5 * time.Second,
		JobTimeout:      5 * time.Second,
		Poll:            5 * time.Millisecond,
	}
}

func TestConformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		drivertest.Run(t, harness(func(t *testing.T) drivers.Driver {
			return fake.New().Driver("conformance")
		}))
	})
	t.Run("file", func(t *testing.T) {
		drivertest.Run(t, harness(func(t *testing.T) drivers.Driver {
			f, err := fake.NewFile(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return f.Driver("conformance")
		}))
	})
	// Every call goes to a Fake freshly opened on the same directory, as if
	// the process had restarted in between: everything the suite checks must
	// survive that.
	t.Run("file-reopened-per-call", func(t *testing.T) {
		drivertest.Run(t, harness(func(t *testing.T) drivers.Driver {
			return &reopening{t: t, dir: t.TempDir(), name: "conformance"}
		}))
	})
}

// reopening is a driver that opens the file-backed fake anew for every call.
type reopening struct {
	t    *testing.T
	dir  string
	name string
}

func (r *reopening) open() *fake.Driver {
	f, err := fake.NewFile(r.dir)
	if err != nil {
		r.t.Errorf("reopen: %v", err)
		return fake.New().Driver(r.name)
	}
	return f.Driver(r.name)
}

func (r *reopening) Observe(ctx context.Context) (drivers.State, error) {
	return r.open().Observe(ctx)
}

func (r *reopening) Apply(ctx context.Context, t drivers.Target) error {
	return r.open().Apply(ctx, t)
}

func (r *reopening) StartJob(ctx context.Context, id string, run plan.Run) error {
	return r.open().StartJob(ctx, id, run)
}

func (r *reopening) JobStatus(ctx context.Context, id string) (drivers.JobStatus, error) {
	return r.open().JobStatus(ctx, id)
}

func (r *reopening) RemoveJob(ctx context.Context, id string) error {
	return r.open().RemoveJob(ctx, id)
}

func (r *reopening) PublishFlags(ctx context.Context, flags map[string]int) error {
	return r.open().PublishFlags(ctx, flags)
}

func (r *reopening) Snapshot(ctx context.Context) ([]byte, error) {
	return r.open().Snapshot(ctx)
}

func (r *reopening) Restore(ctx context.Context, snapshot []byte) error {
	return r.open().Restore(ctx, snapshot)
}

func TestReplicasFollowTraffic(t *testing.T) {
	for _, tc := range []struct {
		target                   drivers.Target
		replicas                 int
		wantStable, wantCandiate int
	}{
		{drivers.Target{}, 10, 10, 0},
		{drivers.Target{Mirror: 100}, 10, 9, 1},
		{drivers.Target{Traffic: 5}, 10, 9, 1},
		{drivers.Target{Traffic: 25}, 10, 7, 3},
		{drivers.Target{Traffic: 50}, 10, 5, 5},
		{drivers.Target{Traffic: 100}, 10, 1, 10},
		{drivers.Target{Traffic: 100, Decommission: true}, 10, 0, 10},
		{drivers.Target{Traffic: 1}, 3, 2, 1},
	} {
		t.Run(fmt.Sprintf("%+v/%d", tc.target, tc.replicas), func(t *testing.T) {
			d := fake.New(fake.WithReplicas(tc.replicas)).Driver("p")
			if err := d.Apply(t.Context(), tc.target); err != nil {
				t.Fatal(err)
			}
			s := d.State()
			if s.StableReplicas != tc.wantStable || s.CandidateReplicas != tc.wantCandiate ||
				s.StableReady != s.StableReplicas || s.CandidateReady != s.CandidateReplicas {
				t.Errorf("state = %+v, want stable %d and candidate %d, all ready", s, tc.wantStable, tc.wantCandiate)
			}
			if !s.Matches(tc.target, 0) {
				t.Errorf("state %+v does not match %+v exactly", s, tc.target)
			}
		})
	}
}

func TestApplyRejectsOutOfRange(t *testing.T) {
	d := fake.New().Driver("p")
	for _, target := range []drivers.Target{{Traffic: 101}, {Traffic: -1}, {Mirror: 101}} {
		if err := d.Apply(t.Context(), target); err == nil {
			t.Errorf("Apply(%+v) = nil, want an error", target)
		}
	}
	if err := d.PublishFlags(t.Context(), map[string]int{"a": 101}); err == nil {
		t.Error("PublishFlags at 101% = nil, want an error")
	}
}

func TestFailNextAndCalls(t *testing.T) {
	ctx := t.Context()
	d := fake.New().Driver("p")
	errBoom := errors.New("boom")
	d.FailNext(fake.OpApply, errBoom)
	d.FailNext(fake.OpObserve, errBoom)

	if err := d.Apply(ctx, drivers.Target{Traffic: 25}); !errors.Is(err, errBoom) {
		t.Fatalf("first Apply = %v, want boom", err)
	}
	if s := d.State(); s.Traffic != 0 {
		t.Fatalf("a failed Apply changed the state: %+v", s)
	}
	if err := d.Apply(ctx, drivers.Target{Traffic: 25}); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if _, err := d.Observe(ctx); !errors.Is(err, errBoom) {
		t.Fatalf("first Observe = %v, want boom", err)
	}
	if s, err := d.Observe(ctx); err != nil || s.Traffic != 25 {
		t.Fatalf("second Observe = %+v, %v", s, err)
	}
	d.FailNext(fake.OpStartJob, errBoom)
	if err := d.StartJob(ctx, "j", plan.Run{Image: "x"}); !errors.Is(err, errBoom) {
		t.Fatalf("StartJob = %v, want boom", err)
	}
	if _, err := d.JobStatus(ctx, "j"); !errors.Is(err, drivers.ErrJobNotFound) {
		t.Fatalf("JobStatus after a failed StartJob = %v, want not found", err)
	}
	d.FailNext(fake.OpPublish, errBoom)
	if err := d.PublishFlags(ctx, map[string]int{"b": 2, "a": 1}); !errors.Is(err, errBoom) {
		t.Fatalf("PublishFlags = %v, want boom", err)
	}
	if err := d.PublishFlags(ctx, map[string]int{"b": 2, "a": 1}); err != nil {
		t.Fatal(err)
	}
	d.FailNext(fake.OpJobStatus, errBoom)
	if _, err := d.JobStatus(ctx, "j"); !errors.Is(err, errBoom) {
		t.Fatalf("JobStatus = %v, want boom", err)
	}

	var got []string
	for _, c := range d.Calls() {
		got = append(got, c.String())
	}
	want := []string{
		"apply traffic=25 mirror=0: boom",
		"apply traffic=25 mirror=0",
		"observe: boom",
		"observe",
		"startjob id=j image=x: boom",
		"jobstatus id=j: fake: job j of p: job not found",
		"publish a=1,b=2: boom",
		"publish a=1,b=2",
		"jobstatus id=j: boom",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Calls =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if a := d.Applied(); len(a) != 1 || a[0] != (drivers.Target{Traffic: 25}) {
		t.Errorf("Applied = %+v, want the one successful apply", a)
	}
}

func TestFailNextUnknownOpPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("FailNext with an unknown op did not panic")
		}
	}()
	fake.New().Driver("p").FailNext("aply", errors.New("x"))
}

func TestCancelledContextKeepsQueuedFailure(t *testing.T) {
	d := fake.New().Driver("p")
	errBoom := errors.New("boom")
	d.FailNext(fake.OpApply, errBoom)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Apply(ctx, drivers.Target{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a cancelled context = %v", err)
	}
	if err := d.Apply(t.Context(), drivers.Target{}); !errors.Is(err, errBoom) {
		t.Fatalf("Apply after = %v, want the queued failure", err)
	}
}

func TestOpener(t *testing.T) {
	f := fake.New()
	open := f.Opener()
	d, err := open(t.Context(), &plan.Plan{Metadata: plan.Metadata{Name: "hal9"}})
	if err != nil {
		t.Fatal(err)
	}
	if d != drivers.Driver(f.Driver("hal9")) {
		t.Error("Opener and Driver return different drivers for the same plan")
	}
	if _, err := open(t.Context(), &plan.Plan{}); err == nil {
		t.Error("Opener of a plan without a name = nil error")
	}
	if _, err := open(t.Context(), nil); err == nil {
		t.Error("Opener of nil = nil error")
	}

	ff, err := fake.NewFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ff.Opener()(t.Context(), &plan.Plan{Metadata: plan.Metadata{Name: "../escape"}}); err == nil {
		t.Error("file Opener accepted a name that is a path")
	}
	if err := ff.Driver("a/b").Apply(t.Context(), drivers.Target{}); err == nil {
		t.Error("file driver with a name that is a path applied")
	}
}

func TestJobRunsOnFakeClock(t *testing.T) {
	ctx := t.Context()
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	d := fake.New(fake.WithClock(clk)).Driver("p")
	run := plan.Run{Image: "hal9-migrator:2.0", Env: map[string]string{fake.EnvJobDuration: "5m", fake.EnvJobExit: "2"}}
	if err := d.StartJob(ctx, "migrate", run); err != nil {
		t.Fatal(err)
	}
	status := func() drivers.JobStatus {
		t.Helper()
		st, err := d.JobStatus(ctx, "migrate")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := status(); st.Done || !strings.Contains(st.Logs, "migrate") {
		t.Fatalf("at start: %+v, want running with logs naming the job", st)
	}
	clk.SetTime(clk.Now().Add(5*time.Minute - time.Nanosecond))
	if st := status(); st.Done {
		t.Fatalf("just before 5m: %+v, want running", st)
	}
	// Starting it again, later, does not restart the clock of the job.
	if err := d.StartJob(ctx, "migrate", run); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(time.Nanosecond))
	st := status()
	if !st.Done || st.Succeeded || st.ExitCode != 2 || !strings.Contains(st.Logs, "migrate exited with code 2") {
		t.Fatalf("at 5m: %+v, want done, failed with exit code 2", st)
	}
}

func TestJobTimeout(t *testing.T) {
	ctx := t.Context()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	d := fake.New(fake.WithClock(clk)).Driver("p")
	run := plan.Run{Image: "x", Timeout: plan.Duration(time.Minute), Env: map[string]string{fake.EnvJobDuration: "1h"}}
	if err := d.StartJob(ctx, "j", run); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(time.Minute))
	st, err := d.JobStatus(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Done || st.Succeeded || st.ExitCode != fake.ExitTimedOut || st.Message != "timed out after 1m" {
		t.Fatalf("after the timeout: %+v, want done, failed, timed out", st)
	}
}

func TestStartJobRejectsBadRun(t *testing.T) {
	d := fake.New().Driver("p")
	for name, run := range map[string]plan.Run{
		"no image":     {},
		"bad duration": {Image: "x", Env: map[string]string{fake.EnvJobDuration: "soon"}},
		"bad exit":     {Image: "x", Env: map[string]string{fake.EnvJobExit: "one"}},
	} {
		if err := d.StartJob(t.Context(), "j", run); err == nil {
			t.Errorf("%s: StartJob = nil, want an error", name)
		}
	}
	if err := d.StartJob(t.Context(), "", plan.Run{Image: "x"}); err == nil {
		t.Error("StartJob with an empty id = nil, want an error")
	}
}

func TestSnapshotRestore(t *testing.T) {
	ctx := t.Context()
	d := fake.New().Driver("p")
	if err := d.Apply(ctx, drivers.Target{Traffic: 25}); err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s drivers.State
	if err := json.Unmarshal(snap, &s); err != nil || !equalState(s, d.State()) {
		t.Fatalf("snapshot %s is not the state as JSON (%v)", snap, err)
	}
	if err := d.Apply(ctx, drivers.Target{Traffic: 50}); err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if got := d.State(); !equalState(got, s) {
		t.Fatalf("after Restore: %+v, want %+v", got, s)
	}
	if err := d.Restore(ctx, []byte("{")); err == nil {
		t.Fatal("Restore of a bad snapshot = nil error")
	}
}

func TestConcurrentUse(t *testing.T) {
	f, err := fake.NewFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			d := f.Driver(fmt.Sprintf("p%d", i%2))
			for j := range 20 {
				ctx := t.Context()
				if err := d.Apply(ctx, drivers.Target{Traffic: j}); err != nil {
					t.Error(err)
				}
				if _, err := d.Observe(ctx); err != nil {
					t.Error(err)
				}
				if err := d.PublishFlags(ctx, map[string]int{"f": j}); err != nil {
					t.Error(err)
				}
				_ = d.Calls()
			}
		})
	}
	wg.Wait()
	for _, name := range []string{"p0", "p1"} {
		applies, err := fake.ReadApplies(f.Dir(), name)
		if err != nil {
			t.Fatal(err)
		}
		if len(applies) != 80 {
			t.Errorf("%s: %d applies logged, want 80", name, len(applies))
		}
		checkSeqs(t, applies)
	}
}

func TestFileStateSurvivesReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	f, err := fake.NewFile(dir, fake.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	d := f.Driver("hal9")
	targets := []drivers.Target{{Mirror: 100}, {Traffic: 5}, {Traffic: 25}, {Traffic: 10}}
	for _, target := range targets {
		clk.SetTime(clk.Now().Add(time.Second))
		if err := d.Apply(ctx, target); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := d.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PublishFlags(ctx, map[string]int{"hierarchical_neurons": 10}); err != nil {
		t.Fatal(err)
	}
	if err := d.StartJob(ctx, "migrate", plan.Run{Image: "m", Env: map[string]string{fake.EnvJobDuration: "1h"}}); err != nil {
		t.Fatal(err)
	}
	want := d.State()

	clk.SetTime(clk.Now().Add(30 * time.Minute))
	g, err := fake.NewFile(dir, fake.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	e := g.Driver("hal9")
	got, err := e.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !equalState(got, want) {
		t.Fatalf("after reopening: %+v, want %+v", got, want)
	}
	if st, err := e.JobStatus(ctx, "migrate"); err != nil || st.Done {
		t.Fatalf("job after reopening, half-way: %+v, %v; want running", st, err)
	}
	clk.SetTime(clk.Now().Add(30 * time.Minute))
	if st, err := e.JobStatus(ctx, "migrate"); err != nil || !st.Done || !st.Succeeded {
		t.Fatalf("job after reopening, at its end: %+v, %v; want done", st, err)
	}
	if err := e.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}

	applies, err := fake.ReadApplies(dir, "hal9")
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, applies)
	if len(applies) != len(targets)+1 {
		t.Fatalf("%d changes logged, want %d: %+v", len(applies), len(targets)+1, applies)
	}
	for i, target := range targets {
		a := applies[i]
		if a.Op != fake.OpApply || a.Target != target || !a.Time.Equal(time.Date(2026, 1, 2, 3, 4, 6+i, 0, time.UTC)) {
			t.Errorf("change %d = %+v, want apply of %+v at second %d", i+1, a, target, 6+i)
		}
	}
	if last := applies[len(applies)-1]; last.Op != fake.OpRestore || last.Target != targets[len(targets)-1] {
		t.Errorf("last change = %+v, want the restore of %+v", last, targets[len(targets)-1])
	}
}

func TestOpenRepairsLog(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	f, err := fake.NewFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := f.Driver("p")
	for _, traffic := range []int{5, 10, 25} {
		if err := d.Apply(ctx, drivers.Target{Traffic: traffic}); err != nil {
			t.Fatal(err)
		}
	}
	log := fake.AppliesPath(dir, "p")
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	// The process died after writing the state of the third apply and
	// before its log line was complete; a temporary file was left too.
	torn := lines[0] + lines[1] + lines[2][:10]
	if err := os.WriteFile(log, []byte(torn), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".p.json.tmp-123"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	applies, err := fake.ReadApplies(dir, "p")
	if err != nil || len(applies) != 2 {
		t.Fatalf("ReadApplies of a torn log = %+v, %v; want the 2 complete lines", applies, err)
	}

	if _, err := fake.NewFile(dir); err != nil {
		t.Fatal(err)
	}
	applies, err = fake.ReadApplies(dir, "p")
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, applies)
	if len(applies) != 3 || applies[2].Target.Traffic != 25 {
		t.Fatalf("after reopening: %+v, want the third apply restored", applies)
	}
	if _, err := os.Stat(filepath.Join(dir, ".p.json.tmp-123")); !os.IsNotExist(err) {
		t.Errorf("leftover temporary file still there: %v", err)
	}
}

func TestOpenRejectsCorruptState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(fake.StatePath(dir, "p"), []byte(`{"state": {`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fake.NewFile(dir); err == nil {
		t.Fatal("NewFile on a corrupt state file = nil error")
	}
}

// checkSeqs checks the changes are numbered 1, 2, 3... without a gap.
func checkSeqs(t *testing.T, applies []fake.Applied) {
	t.Helper()
	for i, a := range applies {
		if a.Seq != int64(i+1) {
			t.Fatalf("change %d has seq %d: %+v", i+1, a.Seq, applies)
		}
	}
}

func equalState(a, b drivers.State) bool {
	if !maps.Equal(a.Flags, b.Flags) {
		return false
	}
	a.Flags, b.Flags = nil, nil
	return reflect.DeepEqual(a, b)
}
