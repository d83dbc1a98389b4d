package fake

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

// The operations a Driver records in Calls and FailNext accepts.
const (
	OpObserve   = "observe"
	OpApply     = "apply"
	OpStartJob  = "startjob"
	OpJobStatus = "jobstatus"
	OpPublish   = "publish"
	OpSnapshot  = "snapshot"
	OpRestore   = "restore"
)

var ops = []string{OpObserve, OpApply, OpStartJob, OpJobStatus, OpPublish, OpSnapshot, OpRestore}

// Job environment variables that decide a fake job's outcome.
const (
	EnvJobDuration = "FAKE_JOB_DURATION"
	EnvJobExit     = "FAKE_JOB_EXIT"
)

// ExitTimedOut is the exit code of a job stopped by its Run.Timeout.
const ExitTimedOut = -1

var (
	_ drivers.Driver       = (*Driver)(nil)
	_ drivers.Checkpointer = (*Driver)(nil)
	_ drivers.JobRemover   = (*Driver)(nil)
)

// Driver is the fake driver of one plan's workloads. It is safe for
// concurrent use; calls are serialised, so Calls is a total order.
type Driver struct {
	name string
	cfg  config
	dir  string
	// broken, when set, fails every call: the plan's name cannot name a file.
	broken error

	mu    sync.Mutex
	rec   record
	calls []Call
	fails map[string][]error
}

// Call is one call made to a Driver, in the order received.
type Call struct {
	// Op is one of the Op constants.
	Op string
	// Args summarises the arguments: "traffic=25 mirror=0" for an apply,
	// "id=migrate image=migrator:2" for a job, "a=10,b=25" for flags.
	Args string
	// Target is the target of an apply, zero for other operations.
	Target drivers.Target
	// Err is what the call returned.
	Err error
}

// String formats c as "op args", with ": error" if it failed.
func (c Call) String() string {
	s := c.Op
	if c.Args != "" {
		s += " " + c.Args
	}
	if c.Err != nil {
		s += ": " + c.Err.Error()
	}
	return s
}

// Name returns the plan name the driver serves.
func (d *Driver) Name() string { return d.name }

// FailNext makes the next call of op (one of the Op constants) return err
// without any effect. Failures queue up: calling FailNext twice fails the next
// two calls. A call made with a cancelled context fails on that and leaves the
// queue alone. FailNext panics on an unknown op, a mistake in the test.
func (d *Driver) FailNext(op string, err error) {
	if !slices.Contains(ops, op) {
		panic(fmt.Sprintf("fake: FailNext: unknown op %q, want one of %s", op, strings.Join(ops, ", ")))
	}
	if err == nil {
		panic("fake: FailNext: nil error")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fails[op] = append(d.fails[op], err)
}

// Calls returns the calls made so far, oldest first.
func (d *Driver) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// Applied returns the targets of the successful applies so far, oldest first.
func (d *Driver) Applied() []drivers.Target {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ts []drivers.Target
	for _, c := range d.calls {
		if c.Op == OpApply && c.Err == nil {
			ts = append(ts, c.Target)
		}
	}
	return ts
}

// State returns the current state without recording a call.
func (d *Driver) State() drivers.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return cloneState(d.rec.State)
}

// SetState replaces the state as if someone had changed the workloads behind
// the driver's back (a drift test). It is not a call: it is not recorded, it
// does not count as a change in the applies log, and FailNext does not touch
// it. A file-backed driver writes it to disk.
func (d *Driver) SetState(s drivers.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.broken != nil {
		return fmt.Errorf("fake: set state of %s: %w", d.name, d.broken)
	}
	next := d.rec.clone()
	next.State = cloneState(s)
	return d.commit(next, "", drivers.Target{})
}

// Observe reports the state as of the last change.
func (d *Driver) Observe(ctx context.Context) (drivers.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.enter(ctx, OpObserve)
	d.record(OpObserve, "", drivers.Target{}, err)
	if err != nil {
		return drivers.State{}, err
	}
	return cloneState(d.rec.State), nil
}

// Apply brings about t at once: traffic, mirror and decommission as asked,
// replicas split as the package documentation says.
func (d *Driver) Apply(ctx context.Context, t drivers.Target) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.apply(ctx, t)
	d.record(OpApply, describeTarget(t), t, err)
	return err
}

func (d *Driver) apply(ctx context.Context, t drivers.Target) error {
	if err := d.enter(ctx, OpApply); err != nil {
		return err
	}
	if t.Traffic < 0 || t.Traffic > 100 || t.Mirror < 0 || t.Mirror > 100 {
		return fmt.Errorf("fake: apply %s to %s: traffic and mirror must be within 0..100", describeTarget(t), d.name)
	}
	next := d.rec.clone()
	next.State = stateFor(d.cfg.replicas, t, d.rec.State.Flags)
	if err := d.commit(next, OpApply, t); err != nil {
		return fmt.Errorf("fake: apply %s to %s: %w", describeTarget(t), d.name, err)
	}
	return nil
}

// StartJob records a job started now on the fake's clock, unless one with id
// exists, in which case it does nothing. A run whose FAKE_JOB_DURATION or
// FAKE_JOB_EXIT cannot be parsed, or with no image, is an error.
func (d *Driver) StartJob(ctx context.Context, id string, run plan.Run) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.startJob(ctx, id, run)
	d.record(OpStartJob, fmt.Sprintf("id=%s image=%s", id, run.Image), drivers.Target{}, err)
	return err
}

func (d *Driver) startJob(ctx context.Context, id string, run plan.Run) error {
	if err := d.enter(ctx, OpStartJob); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("fake: start job for %s: empty id", d.name)
	}
	if _, ok := d.rec.Jobs[id]; ok {
		return nil
	}
	if run.Image == "" {
		return fmt.Errorf("fake: start job %s for %s: run has no image", id, d.name)
	}
	if _, _, err := outcome(run); err != nil {
		return fmt.Errorf("fake: start job %s for %s: %w", id, d.name, err)
	}
	next := d.rec.clone()
	if next.Jobs == nil {
		next.Jobs = map[string]job{}
	}
	next.Jobs[id] = job{Run: cloneRun(run), Started: d.cfg.clock.Now()}
	if err := d.commit(next, "", drivers.Target{}); err != nil {
		return fmt.Errorf("fake: start job %s for %s: %w", id, d.name, err)
	}
	return nil
}

// RemoveJob forgets the job started under id once it is done, as the real
// drivers remove what a job leaves behind: its JobStatus then reports
// ErrJobNotFound. Removing a job never started, or removed already, does
// nothing; removing one still running is an error.
func (d *Driver) RemoveJob(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.removeJob(ctx, id)
	d.record("removejob", "id="+id, drivers.Target{}, err)
	return err
}

func (d *Driver) removeJob(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	j, ok := d.rec.Jobs[id]
	if !ok {
		return nil
	}
	if dur, _, err := outcome(j.Run); err == nil {
		if dur, _ = runFor(j.Run, dur); d.cfg.clock.Since(j.Started) < dur {
			return fmt.Errorf("fake: job %s of %s is still running: not removed", id, d.name)
		}
	}
	next := d.rec.clone()
	delete(next.Jobs, id)
	if err := d.commit(next, "", drivers.Target{}); err != nil {
		return fmt.Errorf("fake: remove job %s of %s: %w", id, d.name, err)
	}
	return nil
}

// runFor is how long a job of run with the outcome duration dur runs: dur,
// or its timeout when shorter (timedOut).
func runFor(run plan.Run, dur time.Duration) (_ time.Duration, timedOut bool) {
	if timeout := run.Timeout.Std(); timeout > 0 && timeout < dur {
		return timeout, true
	}
	return dur, false
}

// JobStatus reports the job started under id: done once its duration (or its
// timeout, if shorter) has passed on the fake's clock.
func (d *Driver) JobStatus(ctx context.Context, id string) (drivers.JobStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.jobStatus(ctx, id)
	d.record(OpJobStatus, "id="+id, drivers.Target{}, err)
	return st, err
}

func (d *Driver) jobStatus(ctx context.Context, id string) (drivers.JobStatus, error) {
	if err := d.enter(ctx, OpJobStatus); err != nil {
		return drivers.JobStatus{}, err
	}
	j, ok := d.rec.Jobs[id]
	if !ok {
		return drivers.JobStatus{}, fmt.Errorf("fake: job %s of %s: %w", id, d.name, drivers.ErrJobNotFound)
	}
	dur, exit, err := outcome(j.Run)
	if err != nil { // only if the state file was edited by hand
		return drivers.JobStatus{}, fmt.Errorf("fake: job %s of %s: %w", id, d.name, err)
	}
	dur, timedOut := runFor(j.Run, dur)
	timeout := j.Run.Timeout.Std()
	logs := fmt.Sprintf("fake job %s (image %s) started\n", id, j.Run.Image)
	if d.cfg.clock.Since(j.Started) < dur {
		return drivers.JobStatus{Message: "running", Logs: logs}, nil
	}
	switch {
	case timedOut:
		return drivers.JobStatus{
			Done:     true,
			ExitCode: ExitTimedOut,
			Message:  "timed out after " + plan.FormatDuration(timeout),
			Logs:     logs + fmt.Sprintf("fake job %s stopped after its timeout of %s\n", id, plan.FormatDuration(timeout)),
		}, nil
	case exit == 0:
		return drivers.JobStatus{Done: true, Succeeded: true, Message: "succeeded",
			Logs: logs + fmt.Sprintf("fake job %s exited with code 0\n", id)}, nil
	default:
		return drivers.JobStatus{Done: true, ExitCode: exit, Message: fmt.Sprintf("failed with exit code %d", exit),
			Logs: logs + fmt.Sprintf("fake job %s exited with code %d\n", id, exit)}, nil
	}
}

// PublishFlags replaces the published flags with flags.
func (d *Driver) PublishFlags(ctx context.Context, flags map[string]int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.publish(ctx, flags)
	d.record(OpPublish, describeFlags(flags), drivers.Target{}, err)
	return err
}

func (d *Driver) publish(ctx context.Context, flags map[string]int) error {
	if err := d.enter(ctx, OpPublish); err != nil {
		return err
	}
	for name, p := range flags {
		if name == "" || p < 0 || p > 100 {
			return fmt.Errorf("fake: publish flags of %s: flag %q at %d%%: want a name and 0..100", d.name, name, p)
		}
	}
	next := d.rec.clone()
	next.State.Flags = cloneFlags(flags)
	if err := d.commit(next, "", drivers.Target{}); err != nil {
		return fmt.Errorf("fake: publish flags of %s: %w", d.name, err)
	}
	return nil
}

// Snapshot returns the state as JSON.
func (d *Driver) Snapshot(ctx context.Context) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.enter(ctx, OpSnapshot)
	var b []byte
	if err == nil {
		b, err = json.Marshal(d.rec.State)
		if err != nil {
			err = fmt.Errorf("fake: snapshot %s: %w", d.name, err)
		}
	}
	d.record(OpSnapshot, "", drivers.Target{}, err)
	return b, err
}

// Restore sets the state back to a snapshot taken by Snapshot. It is logged
// in the applies log of a file-backed driver with op "restore".
func (d *Driver) Restore(ctx context.Context, snapshot []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	args, err := d.restore(ctx, snapshot)
	d.record(OpRestore, args, drivers.Target{}, err)
	return err
}

func (d *Driver) restore(ctx context.Context, snapshot []byte) (string, error) {
	if err := d.enter(ctx, OpRestore); err != nil {
		return "", err
	}
	var s drivers.State
	if err := json.Unmarshal(snapshot, &s); err != nil {
		return "", fmt.Errorf("fake: restore %s: bad snapshot: %w", d.name, err)
	}
	t := drivers.Target{Traffic: s.Traffic, Mirror: s.Mirror, Decommission: s.Decommissioned}
	next := d.rec.clone()
	next.State = cloneState(s)
	if err := d.commit(next, OpRestore, t); err != nil {
		return describeTarget(t), fmt.Errorf("fake: restore %s: %w", d.name, err)
	}
	return describeTarget(t), nil
}

// enter decides whether a call of op may proceed: not with a done context,
// not on a broken driver, not when a failure was queued for op.
func (d *Driver) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fake: %s %s: %w", op, d.name, err)
	}
	if d.broken != nil {
		return fmt.Errorf("fake: %s %s: %w", op, d.name, d.broken)
	}
	if q := d.fails[op]; len(q) > 0 {
		d.fails[op] = q[1:]
		return q[0]
	}
	return nil
}

func (d *Driver) record(op, args string, t drivers.Target, err error) {
	d.calls = append(d.calls, Call{Op: op, Args: args, Target: t, Err: err})
}

// commit makes next the driver's record. A file-backed driver first writes it
// to disk and then, if op is set, appends the change to the applies log.
func (d *Driver) commit(next record, op string, t drivers.Target) error {
	if op != "" {
		next.Last = &Applied{Seq: d.rec.lastSeq() + 1, Time: d.cfg.clock.Now(), Op: op, Target: t}
	}
	if d.dir == "" {
		d.rec = next
		return nil
	}
	if err := writeRecord(d.dir, d.name, next); err != nil {
		return err
	}
	// The state is on disk: from here on it is the truth, whatever the log.
	d.rec = next
	if op != "" {
		return appendApplied(d.dir, d.name, *next.Last)
	}
	return nil
}

// record is everything the driver keeps about one plan's workloads; it is
// the content of the state file.
type record struct {
	State drivers.State `json:"state"`
	// Last is the latest Apply or Restore, nil before the first.
	Last *Applied       `json:"last,omitempty"`
	Jobs map[string]job `json:"jobs,omitempty"`
}

type job struct {
	Run     plan.Run  `json:"run"`
	Started time.Time `json:"started"`
}

func freshRecord(replicas int) record {
	return record{State: stateFor(replicas, drivers.Target{}, nil)}
}

func (r record) lastSeq() int64 {
	if r.Last == nil {
		return 0
	}
	return r.Last.Seq
}

func (r record) clone() record {
	c := r
	c.State = cloneState(r.State)
	c.Jobs = maps.Clone(r.Jobs)
	return c
}

// stateFor returns the state that target brings about with total replicas.
func stateFor(total int, t drivers.Target, flags map[string]int) drivers.State {
	candidate := (total*t.Traffic + 50) / 100
	if candidate == 0 && (t.Traffic > 0 || t.Mirror > 0) {
		candidate = 1
	}
	stable := max(total-candidate, 1)
	if t.Decommission {
		stable = 0
	}
	return drivers.State{
		Traffic:           t.Traffic,
		Mirror:            t.Mirror,
		StableReplicas:    stable,
		StableReady:       stable,
		CandidateReplicas: candidate,
		CandidateReady:    candidate,
		Decommissioned:    t.Decommission,
		Flags:             cloneFlags(flags),
	}
}

// outcome reads a job's duration and exit code from its environment.
func outcome(run plan.Run) (time.Duration, int, error) {
	var dur time.Duration
	if v, ok := run.Env[EnvJobDuration]; ok {
		var err error
		if dur, err = time.ParseDuration(v); err != nil || dur < 0 {
			return 0, 0, fmt.Errorf("%s=%q: want a non-negative Go duration such as 90s", EnvJobDuration, v)
		}
	}
	exit := 0
	if v, ok := run.Env[EnvJobExit]; ok {
		var err error
		if exit, err = strconv.Atoi(v); err != nil {
			return 0, 0, fmt.Errorf("%s=%q: want an integer exit code", EnvJobExit, v)
		}
	}
	return dur, exit, nil
}

func cloneState(s drivers.State) drivers.State {
	s.Flags = cloneFlags(s.Flags)
	return s
}

// cloneFlags copies flags; no flags is nil, as after a round trip through
// JSON.
func cloneFlags(flags map[string]int) map[string]int {
	if len(flags) == 0 {
		return nil
	}
	return maps.Clone(flags)
}

func cloneRun(r plan.Run) plan.Run {
	r.Command = slices.Clone(r.Command)
	r.Args = slices.Clone(r.Args)
	r.Env = maps.Clone(r.Env)
	return r
}

func describeTarget(t drivers.Target) string {
	s := fmt.Sprintf("traffic=%d mirror=%d", t.Traffic, t.Mirror)
	if t.Decommission {
		s += " decommission"
	}
	return s
}

func describeFlags(flags map[string]int) string {
	parts := make([]string, 0, len(flags))
	for _, name := range slices.Sorted(maps.Keys(flags)) {
		parts = append(parts, fmt.Sprintf("%s=%d", name, flags[name]))
	}
	return strings.Join(parts, ",")
}
