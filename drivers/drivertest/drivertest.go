// Package drivertest is the conformance suite every driver passes: the fake,
// in memory and on disk, and the Docker and Kubernetes drivers against real
// engines. It checks only what the reconciler can see through
// drivers.Driver and drivers.Checkpointer, and it allows for real engines:
// state is polled until it converges, within bounds, and every wait is
// bounded so a broken driver fails the suite instead of hanging it.
//
// A driver's test calls Run with a Harness that creates fresh workloads for
// each case and says what jobs to run:
//
//	func TestConformance(t *testing.T) {
//		drivertest.Run(t, drivertest.Harness{
//			New:           func(t *testing.T) drivers.Driver { return newTestDriver(t) },
//			SucceedingJob: plan.Run{Image: "test-app", Command: []string{"/app", "exit", "0"}},
//			...
//		})
//	}
//
// It does not check how a driver brings a state about (weights, replica
// ratios, containers), nor job logs, whose content depends on the image.
package drivertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

// Harness is what the suite needs from a driver's test.
type Harness struct {
	// New returns a driver for fresh workloads of one plan (stable at full
	// strength, no traffic to the candidate, no flags, no jobs), torn down
	// through t.Cleanup. The suite calls it once per case.
	New func(t *testing.T) drivers.Driver
	// TrafficTolerance is how many percentage points the observed traffic
	// may be off the target, for drivers that split by replica ratio.
	TrafficTolerance int
	// NoMirror says the driver splits traffic by replica ratio and cannot
	// mirror: a plan without a router has no mirror phase (plan vet
	// refuses one). The suite then leaves mirrored targets out, and checks
	// that Apply refuses one with an error rather than reporting it done.
	NoMirror bool

	// SucceedingJob exits 0 within JobTimeout.
	SucceedingJob plan.Run
	// FailingJob exits with FailingExitCode within JobTimeout.
	FailingJob plan.Run
	// FailingExitCode is FailingJob's exit code; 0 accepts any non-zero one.
	FailingExitCode int
	// SlowJob keeps running well beyond JobTimeout (an hour is a good value):
	// the suite checks it is not done after a SucceedingJob started later
	// has finished.
	SlowJob plan.Run

	// Settle bounds how long a state takes to converge after a call, and
	// each call itself. Default 30s.
	Settle time.Duration
	// JobTimeout bounds how long SucceedingJob and FailingJob take to be
	// done. Default 2m.
	JobTimeout time.Duration
	// Poll is the interval between two observations while waiting.
	// Default 100ms.
	Poll time.Duration
}

func (h Harness) withDefaults() Harness {
	if h.Settle <= 0 {
		h.Settle = 30 * time.Second
	}
	if h.JobTimeout <= 0 {
		h.JobTimeout = 2 * time.Minute
	}
	if h.Poll <= 0 {
		h.Poll = 100 * time.Millisecond
	}
	return h
}

// Run runs the conformance suite against the driver h makes, one subtest per
// case.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("drivertest: Harness.New is nil")
	}
	h = h.withDefaults()
	s := suite{h: h}

	t.Run("Observe/fresh", s.observeFresh)
	t.Run("Apply/forward", s.applyForward)
	t.Run("Apply/twice", s.applyTwice)
	t.Run("Apply/back-down-100-to-10", s.applyBackDown)
	if h.NoMirror {
		t.Run("Apply/mirror-refused", s.applyMirrorRefused)
	}
	t.Run("Job/succeeds", s.jobSucceeds)
	t.Run("Job/fails-with-exit-code", s.jobFails)
	t.Run("Job/slow-not-done-after-start", s.jobSlow)
	t.Run("Job/unknown-id-not-found", s.jobUnknown)
	t.Run("Job/start-twice-runs-once", s.jobStartTwice)
	t.Run("Job/start-again-after-done-keeps-outcome", s.jobStartAfterDone)
	t.Run("Job/remove-once-done", s.jobRemove)
	t.Run("Flags/publish", s.flagsPublish)
	t.Run("Flags/smaller-set-removes-others", s.flagsSmaller)
	t.Run("Flags/empty-set-removes-all", s.flagsEmpty)
	t.Run("Cancelled", s.cancelled)
	t.Run("Checkpoint/snapshot-change-restore", s.checkpoint)
}

// WaitFor calls check every poll until it reports done, returns an error, or
// timeout has passed, and returns nil, that error, or an error wrapping
// context.DeadlineExceeded. Each call of check gets a context that ends at the
// deadline. Engine tests may use it too.
func WaitFor(ctx context.Context, timeout, poll time.Duration, check func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		done, err := check(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not done after %s: %w", timeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// Converge polls d until it shows target brought about within tolerance with
// every replica ready, and returns the state it observed last.
func Converge(ctx context.Context, d drivers.Driver, target drivers.Target, tolerance int, timeout, poll time.Duration) (drivers.State, error) {
	var last drivers.State
	err := WaitFor(ctx, timeout, poll, func(ctx context.Context) (bool, error) {
		s, err := d.Observe(ctx)
		if err != nil {
			return false, err
		}
		last = s
		return s.Matches(target, tolerance) && allReady(s), nil
	})
	if err != nil {
		return last, fmt.Errorf("converge to %s: %w (last observed %s)", describeTarget(target), err, describeState(last))
	}
	return last, nil
}

type suite struct{ h Harness }

// ctx returns a context that bounds one call.
func (s suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), s.h.Settle)
	t.Cleanup(cancel)
	return ctx
}

func (s suite) apply(t *testing.T, d drivers.Driver, target drivers.Target) drivers.State {
	t.Helper()
	if err := d.Apply(s.ctx(t), target); err != nil {
		t.Fatalf("Apply(%s): %v", describeTarget(target), err)
	}
	return s.converge(t, d, target)
}

func (s suite) converge(t *testing.T, d drivers.Driver, target drivers.Target) drivers.State {
	t.Helper()
	st, err := Converge(t.Context(), d, target, s.h.TrafficTolerance, s.h.Settle, s.h.Poll)
	if err != nil {
		t.Fatal(err)
	}
	if err := consistent(st); err != nil {
		t.Fatalf("after Apply(%s): %v", describeTarget(target), err)
	}
	return st
}

func (s suite) observeFresh(t *testing.T) {
	d := s.h.New(t)
	st, err := d.Observe(s.ctx(t))
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	if st.Traffic < 0 || st.Traffic > 100 || st.Mirror < 0 || st.Mirror > 100 {
		t.Errorf("Observe = %s: traffic and mirror must be within 0..100", describeState(st))
	}
	if st.StableReady > st.StableReplicas || st.CandidateReady > st.CandidateReplicas {
		t.Errorf("Observe = %s: more replicas ready than desired", describeState(st))
	}
}

// applyForward walks one driver through a migration, each position a
// subtest: off, shadow, canary steps, full, decommissioned.
func (s suite) applyForward(t *testing.T) {
	d := s.h.New(t)
	for _, tc := range []struct {
		name   string
		target drivers.Target
	}{
		{"off", drivers.Target{}},
		{"mirror-100", drivers.Target{Mirror: 100}},
		{"traffic-5", drivers.Target{Traffic: 5}},
		{"traffic-25", drivers.Target{Traffic: 25}},
		{"traffic-50", drivers.Target{Traffic: 50}},
		{"traffic-100", drivers.Target{Traffic: 100}},
		{"decommission", drivers.Target{Traffic: 100, Decommission: true}},
	} {
		if s.h.NoMirror && tc.target.Mirror > 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) { s.apply(t, d, tc.target) })
	}
}

// applyMirrorRefused asks a driver that cannot mirror for a mirrored share:
// it must say no, and leave the split as it was.
func (s suite) applyMirrorRefused(t *testing.T) {
	d := s.h.New(t)
	s.apply(t, d, drivers.Target{Traffic: 25})
	if err := d.Apply(s.ctx(t), drivers.Target{Mirror: 100}); err == nil {
		t.Fatal("Apply(mirror 100%) = nil, want an error from a driver that cannot mirror")
	}
	s.converge(t, d, drivers.Target{Traffic: 25})
}

func (s suite) applyTwice(t *testing.T) {
	d := s.h.New(t)
	target := drivers.Target{Traffic: 25}
	s.apply(t, d, target)
	s.apply(t, d, target)
}

func (s suite) applyBackDown(t *testing.T) {
	d := s.h.New(t)
	s.apply(t, d, drivers.Target{Traffic: 100})
	st := s.apply(t, d, drivers.Target{Traffic: 10})
	if st.StableReplicas == 0 {
		t.Errorf("back at 10%%, stable has no replicas: %s", describeState(st))
	}
}

func (s suite) startJob(t *testing.T, d drivers.Driver, id string, run plan.Run) {
	t.Helper()
	if err := d.StartJob(s.ctx(t), id, run); err != nil {
		t.Fatalf("StartJob(%s): %v", id, err)
	}
}

func (s suite) jobStatus(t *testing.T, d drivers.Driver, id string) drivers.JobStatus {
	t.Helper()
	st, err := d.JobStatus(s.ctx(t), id)
	if err != nil {
		t.Fatalf("JobStatus(%s): %v", id, err)
	}
	return st
}

// waitJob polls the job until it is done and returns its status.
func (s suite) waitJob(t *testing.T, d drivers.Driver, id string) drivers.JobStatus {
	t.Helper()
	var last drivers.JobStatus
	err := WaitFor(t.Context(), s.h.JobTimeout, s.h.Poll, func(ctx context.Context) (bool, error) {
		st, err := d.JobStatus(ctx, id)
		if err != nil {
			return false, err
		}
		last = st
		return st.Done, nil
	})
	if err != nil {
		t.Fatalf("job %s: %v (last status %+v)", id, err, last)
	}
	return last
}

func (s suite) checkSucceeded(t *testing.T, id string, st drivers.JobStatus) {
	t.Helper()
	if !st.Done || !st.Succeeded || st.ExitCode != 0 {
		t.Errorf("job %s = done %t, succeeded %t, exit code %d (%s); want done, succeeded, exit code 0", id, st.Done, st.Succeeded, st.ExitCode, st.Message)
	}
}

func (s suite) checkFailed(t *testing.T, id string, st drivers.JobStatus) {
	t.Helper()
	wrongCode := st.ExitCode == 0 || (s.h.FailingExitCode != 0 && st.ExitCode != s.h.FailingExitCode)
	if !st.Done || st.Succeeded || wrongCode {
		want := "a non-zero exit code"
		if s.h.FailingExitCode != 0 {
			want = fmt.Sprintf("exit code %d", s.h.FailingExitCode)
		}
		t.Errorf("job %s = done %t, succeeded %t, exit code %d (%s); want done, not succeeded, %s", id, st.Done, st.Succeeded, st.ExitCode, st.Message, want)
	}
}

func (s suite) jobSucceeds(t *testing.T) {
	d := s.h.New(t)
	id := jobID("ok")
	s.startJob(t, d, id, s.h.SucceedingJob)
	s.checkSucceeded(t, id, s.waitJob(t, d, id))
}

func (s suite) jobFails(t *testing.T) {
	d := s.h.New(t)
	id := jobID("fail")
	s.startJob(t, d, id, s.h.FailingJob)
	s.checkFailed(t, id, s.waitJob(t, d, id))
}

func (s suite) jobSlow(t *testing.T) {
	d := s.h.New(t)
	id := jobID("slow")
	s.startJob(t, d, id, s.h.SlowJob)
	if st := s.jobStatus(t, d, id); st.Done {
		t.Errorf("slow job %s is done right after start: %+v", id, st)
	}
}

func (s suite) jobUnknown(t *testing.T) {
	d := s.h.New(t)
	_, err := d.JobStatus(s.ctx(t), jobID("never-started"))
	if !errors.Is(err, drivers.ErrJobNotFound) {
		t.Errorf("JobStatus of an id never started = %v, want an error wrapping drivers.ErrJobNotFound", err)
	}
}

// jobStartTwice starts a slow job, then a quick one under the same id: the
// second start must be a no-op, so the id stays running after a quick job
// started later under another id is done.
func (s suite) jobStartTwice(t *testing.T) {
	d := s.h.New(t)
	id, control := jobID("twice"), jobID("control")
	s.startJob(t, d, id, s.h.SlowJob)
	s.startJob(t, d, id, s.h.SucceedingJob)
	s.startJob(t, d, control, s.h.SucceedingJob)
	s.checkSucceeded(t, control, s.waitJob(t, d, control))
	if st := s.jobStatus(t, d, id); st.Done {
		t.Errorf("job %s = %+v after a second StartJob under its id with a quick job; want the first, slow job still running", id, st)
	}
}

// jobStartAfterDone starts a failing job, waits for it, then starts a
// succeeding job under the same id: the outcome must stay the failure.
func (s suite) jobStartAfterDone(t *testing.T) {
	d := s.h.New(t)
	id := jobID("again")
	s.startJob(t, d, id, s.h.FailingJob)
	first := s.waitJob(t, d, id)
	s.checkFailed(t, id, first)
	s.startJob(t, d, id, s.h.SucceedingJob)
	st := s.jobStatus(t, d, id)
	if !st.Done || st.Succeeded || st.ExitCode != first.ExitCode {
		t.Errorf("job %s = %+v after starting it again; want it unchanged, done with exit code %d", id, st, first.ExitCode)
	}
}

// jobRemove removes a done job (drivers.JobRemover): after it the id is
// not found, and removing it again is harmless. A running job is not
// removed.
func (s suite) jobRemove(t *testing.T) {
	d := s.h.New(t)
	rm, ok := d.(drivers.JobRemover)
	if !ok {
		t.Skip("the driver does not implement drivers.JobRemover")
	}
	id, slow := jobID("remove"), jobID("remove-slow")
	s.startJob(t, d, id, s.h.SucceedingJob)
	s.startJob(t, d, slow, s.h.SlowJob)
	s.checkSucceeded(t, id, s.waitJob(t, d, id))
	for range 2 {
		if err := rm.RemoveJob(s.ctx(t), id); err != nil {
			t.Fatalf("RemoveJob(%s) of a done job: %v", id, err)
		}
		if _, err := d.JobStatus(s.ctx(t), id); !errors.Is(err, drivers.ErrJobNotFound) {
			t.Fatalf("JobStatus(%s) after RemoveJob = %v, want an error wrapping drivers.ErrJobNotFound", id, err)
		}
	}
	if err := rm.RemoveJob(s.ctx(t), jobID("never-started")); err != nil {
		t.Errorf("RemoveJob of an id never started = %v, want nil", err)
	}
	if err := rm.RemoveJob(s.ctx(t), slow); err == nil {
		t.Errorf("RemoveJob(%s) of a running job = nil, want an error", slow)
	}
	if st := s.jobStatus(t, d, slow); st.Done {
		t.Errorf("job %s = %+v after a refused RemoveJob; want it still running", slow, st)
	}
}

func (s suite) publish(t *testing.T, d drivers.Driver, flags map[string]int) {
	t.Helper()
	if err := d.PublishFlags(s.ctx(t), flags); err != nil {
		t.Fatalf("PublishFlags(%v): %v", flags, err)
	}
	s.waitFlags(t, d, flags)
}

// waitFlags polls d until it shows exactly flags (nil and empty alike).
func (s suite) waitFlags(t *testing.T, d drivers.Driver, flags map[string]int) {
	t.Helper()
	var last map[string]int
	err := WaitFor(t.Context(), s.h.Settle, s.h.Poll, func(ctx context.Context) (bool, error) {
		st, err := d.Observe(ctx)
		if err != nil {
			return false, err
		}
		last = st.Flags
		return maps.Equal(st.Flags, flags), nil
	})
	if err != nil {
		t.Fatalf("flags %v: %v (last observed %v)", flags, err, last)
	}
}

func (s suite) flagsPublish(t *testing.T) {
	d := s.h.New(t)
	s.publish(t, d, map[string]int{"hierarchical_neurons": 10, "substrate_abstraction": 25, "off": 0, "on": 100})
}

func (s suite) flagsSmaller(t *testing.T) {
	d := s.h.New(t)
	s.publish(t, d, map[string]int{"a": 10, "b": 25, "c": 50})
	s.publish(t, d, map[string]int{"b": 30})
}

func (s suite) flagsEmpty(t *testing.T) {
	d := s.h.New(t)
	s.publish(t, d, map[string]int{"a": 10})
	s.publish(t, d, map[string]int{})
}

// cancelled calls every method with a context already cancelled: each must
// return, promptly, an error wrapping context.Canceled.
func (s suite) cancelled(t *testing.T) {
	d := s.h.New(t)
	id := jobID("cancel")
	s.startJob(t, d, id, s.h.SlowJob)

	cases := []namedCall{
		{"Observe", func(ctx context.Context) error { _, err := d.Observe(ctx); return err }},
		{"Apply", func(ctx context.Context) error { return d.Apply(ctx, drivers.Target{Traffic: 50}) }},
		{"StartJob", func(ctx context.Context) error { return d.StartJob(ctx, jobID("cancel-start"), s.h.SucceedingJob) }},
		{"JobStatus", func(ctx context.Context) error { _, err := d.JobStatus(ctx, id); return err }},
		{"PublishFlags", func(ctx context.Context) error { return d.PublishFlags(ctx, map[string]int{"a": 1}) }},
	}
	if cp, ok := d.(drivers.Checkpointer); ok {
		snap, err := cp.Snapshot(s.ctx(t))
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		cases = append(cases,
			namedCall{"Snapshot", func(ctx context.Context) error { _, err := cp.Snapshot(ctx); return err }},
			namedCall{"Restore", func(ctx context.Context) error { return cp.Restore(ctx, snap) }},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			done := make(chan error, 1)
			go func() { done <- tc.call(ctx) }()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("%s with a cancelled context = %v, want an error wrapping context.Canceled", tc.name, err)
				}
			case <-time.After(s.h.Settle):
				t.Errorf("%s with a cancelled context has not returned after %s", tc.name, s.h.Settle)
			}
		})
	}
}

type namedCall struct {
	name string
	call func(ctx context.Context) error
}

func (s suite) checkpoint(t *testing.T) {
	d := s.h.New(t)
	cp, ok := d.(drivers.Checkpointer)
	if !ok {
		t.Skip("the driver does not implement drivers.Checkpointer")
	}
	before := drivers.Target{Traffic: 25}
	beforeFlags := map[string]int{"a": 10}
	s.apply(t, d, before)
	s.publish(t, d, beforeFlags)

	snap, err := cp.Snapshot(s.ctx(t))
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if len(snap) == 0 {
		t.Fatal("Snapshot returned nothing")
	}

	s.apply(t, d, drivers.Target{Traffic: 50, Mirror: 0})
	s.publish(t, d, map[string]int{"a": 50, "b": 5})

	if err := cp.Restore(s.ctx(t), snap); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	s.converge(t, d, before)
	s.waitFlags(t, d, beforeFlags)
}

// consistent checks what any converged state must show, whatever the driver.
func consistent(s drivers.State) error {
	switch {
	case s.StableReplicas < 0 || s.CandidateReplicas < 0 || s.StableReady < 0 || s.CandidateReady < 0:
		return fmt.Errorf("negative replica count: %s", describeState(s))
	case s.Decommissioned && s.StableReplicas != 0:
		return fmt.Errorf("decommissioned but stable has replicas: %s", describeState(s))
	case (s.Traffic > 0 || s.Mirror > 0) && s.CandidateReplicas == 0:
		return fmt.Errorf("candidate takes requests but has no replicas: %s", describeState(s))
	case s.Traffic < 100 && !s.Decommissioned && s.StableReplicas == 0:
		return fmt.Errorf("stable takes traffic but has no replicas: %s", describeState(s))
	}
	return nil
}

func allReady(s drivers.State) bool {
	return s.StableReady == s.StableReplicas && s.CandidateReady == s.CandidateReplicas
}

// jobID returns a job id unique across runs, valid as a Kubernetes name and
// a container name.
func jobID(what string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "dt-" + what + "-" + hex.EncodeToString(b)
}

func describeTarget(t drivers.Target) string {
	s := fmt.Sprintf("traffic %d%%, mirror %d%%", t.Traffic, t.Mirror)
	if t.Decommission {
		s += ", decommissioned"
	}
	return s
}

func describeState(s drivers.State) string {
	d := fmt.Sprintf("traffic %d%%, mirror %d%%, stable %d/%d ready, candidate %d/%d ready",
		s.Traffic, s.Mirror, s.StableReady, s.StableReplicas, s.CandidateReady, s.CandidateReplicas)
	if s.Decommissioned {
		d += ", decommissioned"
	}
	return d
}
