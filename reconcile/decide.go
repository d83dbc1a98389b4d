// Package reconcile decides and carries out the next step of every
// migration. Decide is pure: given what Git wants, what the driver, the
// guardrails and the durable record show, and the time, it returns one
// Action with a Reason. The Runner observes, decides, records its intent,
// acts through a driver and records the result, one action per plan per
// cycle, so that a daemon killed at any instant resumes from the store.
//
// The package does not talk to Git or Prometheus itself: the desired plans
// and the guardrail readings are handed to it.
package reconcile

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// Desired is a plan as Git has it, with its timeline worked out once.
type Desired struct {
	Plan *plan.Plan
	// Target is the plan's resolved spec.target.
	Target plan.Position
	// Commit identifies the human change that set the target. A position
	// that failed under a commit is not entered again until Commit
	// changes.
	Commit string
	// Force allows moving back past a completed irreversible phase,
	// restoring its checkpoint (an explicit `rollback --force`).
	Force bool
	// Restore names a checkpoint to restore when moving back to the
	// target, which must be the checkpoint's position (`state restore`).
	Restore string
	// Resume is where the migration last reported itself (its status file
	// in Git), for a plan whose record never entered a position: a daemon
	// whose store was lost carries on from there when the workloads stand
	// there, instead of moving them back to start.
	Resume *store.Record

	route    []plan.Step // the timeline up to the target, capped there
	timeline []plan.Step // the whole plan
	holding  string      // the reason of a plan at rest at its target
	// Reasons worked out once per step of the route, so that deciding
	// allocates nothing on the common paths.
	soaking, advancing []string
}

// NewDesired works out the timeline of p at commit.
func NewDesired(p *plan.Plan, commit string) *Desired {
	d := &Desired{Plan: p, Target: p.TargetPosition(), Commit: commit}
	d.route = p.Timeline(d.Target)
	d.timeline = p.Timeline(plan.Last)
	d.holding = "holding at the target, " + d.Target.String()
	d.soaking = make([]string, len(d.route))
	d.advancing = make([]string, len(d.route))
	for i, s := range d.route {
		d.soaking[i] = fmt.Sprintf("soaking at %s for %s", s.Position, s.Soak)
		if i+1 < len(d.route) {
			d.advancing[i] = advanceReason(s.Position, d.route[i+1], s)
		}
	}
	return d
}

// step returns the step of the plan at pos, from the route to the target,
// the whole timeline or else its phase, and its index in the route (-1 if
// not there).
func (d *Desired) step(pos plan.Position) (plan.Step, int, bool) {
	for i, s := range d.route {
		if s.Position == pos {
			return s, i, true
		}
	}
	for _, s := range d.timeline {
		if s.Position == pos {
			return s, -1, true
		}
	}
	// A waypoint inside a phase that an earlier target capped (canary 20%
	// of [5, 10, 25]) is on neither; it is a step of its phase all the
	// same, with its soak, checks and reaction to a breach.
	if i := d.Plan.PhaseIndex(pos.Phase); i >= 0 && len(d.Plan.Spec.Phases[i].Steps) > 0 {
		if steps := d.Plan.Timeline(pos); len(steps) > 0 && steps[len(steps)-1].Position == pos {
			return steps[len(steps)-1], -1, true
		}
	}
	return plan.Step{}, -1, false
}

// next returns the first step of the route after pos, given pos's index in
// the route when it is on it.
func (d *Desired) next(pos plan.Position, i int) (plan.Step, bool) {
	if i >= 0 {
		if i+1 < len(d.route) {
			return d.route[i+1], true
		}
		return plan.Step{}, false
	}
	for _, s := range d.route {
		if d.Plan.Compare(s.Position, pos) > 0 {
			return s, true
		}
	}
	return plan.Step{}, false
}

// floor returns the point of no return of a migration: the last
// irreversible step it completed, which it does not move back past without
// Force. The record names it; an irreversible step before the position
// counts too, since the position could only be reached through it.
func (d *Desired) floor(rec store.Record) (plan.Position, bool) {
	var out plan.Position
	found := false
	for _, s := range d.timeline {
		if d.Plan.Compare(s.Position, rec.Position) >= 0 {
			break
		}
		if s.Irreversible {
			out, found = s.Position, true
		}
	}
	if rec.NoReturn != nil && (!found || d.Plan.Compare(*rec.NoReturn, out) > 0) {
		out, found = *rec.NoReturn, true
	}
	// An irreversible run phase whose job has run and been verified here
	// has completed, though it was not left (it is the target): its
	// migration cannot be undone by moving traffic back.
	if s, _, ok := d.step(rec.Position); ok && s.Irreversible && s.Run != nil && finished(d, rec, s) {
		out, found = rec.Position, true
	}
	return out, found
}

// neverMoved reports whether rec has never entered a position: the record
// of a plan this store has not moved yet.
func neverMoved(rec store.Record) bool {
	return rec.Position.IsStart() && rec.EnteredAt.IsZero() && rec.Pending == nil
}

// finished reports whether the job of the run phase at rec's position
// succeeded, and its checks passed, since the position was entered.
func finished(d *Desired, rec store.Record, s plan.Step) bool {
	j := rec.Job
	if j == nil || j.ID != JobID(d.Plan.Metadata.Name, s.Phase, rec.EnteredAt) || !j.Done || !j.Succeeded {
		return false
	}
	for _, name := range s.Verify {
		if c, ok := rec.Checks[name]; !ok || !c.Passed || c.Pending || c.At.Before(rec.EnteredAt) {
			return false
		}
	}
	return true
}

// Health is the state of one guardrail, as the guardrail evaluator reports
// it. The states are kept apart: a query error is not a breach, and no data
// is neither.
type Health string

// Guardrail states.
const (
	Healthy  Health = "Healthy"
	Pending  Health = "Pending" // over its bound, not yet for its `for` window
	Breached Health = "Breached"
	NoData   Health = "NoData"
	Error    Health = "Error"
	// Measuring: nothing measured at this position yet. A guardrail is
	// judged only on readings taken where the migration stands, so every
	// move starts here; it is neither green nor a breach.
	Measuring Health = "Measuring"
)

// Reading is one guardrail's latest evaluation.
type Reading struct {
	Name   string    `json:"name"`
	Health Health    `json:"health"`
	Value  float64   `json:"value"`
	Bound  string    `json:"bound,omitempty"` // "max 0.05 for 5m", "expect 2xx, 3 failures in a row"
	Since  time.Time `json:"since"`           // when Health last changed
	Detail string    `json:"detail,omitempty"`
	// Compare is set for a guardrail that compares the candidate with
	// stable; Value is then the candidate's value.
	Compare *Comparison `json:"compare,omitempty"`
}

// Observed is everything known about a migration now.
type Observed struct {
	Record store.Record
	// Driver is the workloads' state; DriverErr is set when they could not
	// be observed, and then nothing is changed.
	Driver    drivers.State
	DriverErr error
	// Tolerance is how many percentage points of traffic the driver may be
	// off the position (a driver that splits by replica ratio gets only
	// near some shares).
	Tolerance int
	// Guardrails are the latest readings of the plan's guardrails.
	Guardrails []Reading
	// Job is the status of Record.Job, when it is running.
	Job *drivers.JobStatus
	// Peers are the other plans the plan's gates name, by name.
	Peers map[string]Peer
}

// Kind is what an Action does.
type Kind string

// Action kinds.
const (
	// Wait changes nothing; Until says when to look again at the latest.
	Wait Kind = "Wait"
	// Apply makes the driver show the recorded position again: after a
	// crash between deciding and applying, or when the workloads drifted.
	Apply Kind = "Apply"
	// Advance moves one step forward.
	Advance Kind = "Advance"
	// MoveBack moves straight back to a lowered target.
	MoveBack Kind = "MoveBack"
	// Rollback moves back after a breach or a failure.
	Rollback Kind = "Rollback"
	// Freeze holds the position after a breach past a point of no return.
	Freeze Kind = "Freeze"
	// Checkpoint snapshots the workloads before a phase.
	Checkpoint Kind = "Checkpoint"
	// Resume records Desired.Resume as the plan's record, touching
	// nothing.
	Resume Kind = "Resume"
	// StartJob starts the job of a run phase.
	StartJob Kind = "StartJob"
	// RunChecks runs verify checks before leaving a step.
	RunChecks Kind = "RunChecks"
	// Decommission scales stable to zero.
	Decommission Kind = "Decommission"
	// PublishFlags publishes the plan's feature flags.
	PublishFlags Kind = "PublishFlags"
	// Promote asks for the target to move on to To's phase (spec.promotion
	// auto or pull-request): the migration has held at its target, and the
	// next phase's gates are open. The daemon commits it, or proposes it.
	Promote Kind = "Promote"
)

// Statuses a record can have.
const (
	StatusProgressing = "Progressing"
	StatusHolding     = "Holding"
	StatusWaiting     = "Waiting" // blocked: no data, a driver error, a failed position
	StatusRolledBack  = "RolledBack"
	StatusFrozen      = "Frozen"
	StatusBreached    = "Breached" // automatic rollback is off
	StatusCompleted   = "Completed"
)

// Action is the one thing to do next for a migration.
type Action struct {
	Kind Kind
	// To is the position an Apply, Advance, MoveBack or Rollback goes to,
	// and Target what the driver must show there.
	To     plan.Position
	Target drivers.Target
	// Checkpoint names the snapshot to take.
	Checkpoint string
	// Restore names the checkpoint whose snapshot an Advance or a MoveBack
	// restores on its way to the position the checkpoint was taken at.
	Restore string
	// Job is the job to start: JobID is derived from the plan, the phase
	// and the time the position was entered, so repeating StartJob after a
	// crash does not start a second job.
	JobID string
	Run   *plan.Run
	// Checks are the verify checks to run.
	Checks []string
	// Failure is set on a Rollback or Freeze: what failed.
	Failure *Failure
	// Gates are the gates the next move waits on, judged.
	Gates []GateState
	// Status and Reason describe the migration after the action.
	Status string
	Reason string
	// Until is, for Wait, when the decision may change on its own (a soak
	// ends); zero when only new readings or commits can change it.
	Until time.Time
}

// Failure says what made a position fail.
type Failure struct {
	// Guardrail, Value and Bound are set for a breach.
	Guardrail string  `json:"guardrail,omitempty"`
	Value     float64 `json:"value,omitempty"`
	Bound     string  `json:"bound,omitempty"`
	// Compare is set when the guardrail compares the candidate with
	// stable: both sides' values.
	Compare *Comparison `json:"compare,omitempty"`
	// What is a short description: "guardrail error-rate breached",
	// "job failed", "check data-integrity failed".
	What string `json:"what"`
	// Member is, in a lockstep group, the member where it failed.
	Member string `json:"member,omitempty"`
}

// targetOf is what the driver must show at a position of d's plan.
func (d *Desired) targetOf(pos plan.Position, decommissioned bool) drivers.Target {
	t := drivers.Target{Traffic: pos.Percentage, Decommission: decommissioned}
	if s, _, ok := d.step(pos); ok {
		t.Mirror = s.Mirror
	}
	return t
}

// Decide returns the next action for one migration. It reads no clock and
// calls nothing.
func Decide(d *Desired, o Observed, now time.Time) Action {
	rec := o.Record
	cur := rec.Position

	if o.DriverErr != nil {
		return Action{Kind: Wait, Status: StatusWaiting, Reason: "cannot observe the workloads: " + o.DriverErr.Error()}
	}
	// A record that never entered a position (none at all, or only waits
	// saved while the workloads could not be observed), and workloads
	// standing where the migration last said it was: carry on from there
	// rather than move them back to start. The soak starts again
	// (GreenSince is now), so none is shortened.
	if r := d.Resume; r != nil && !r.Position.IsStart() && neverMoved(rec) {
		if _, _, known := d.step(r.Position); known && o.Driver.Matches(d.targetOf(r.Position, r.Decommissioned), o.Tolerance) {
			return Action{Kind: Resume, To: r.Position, Status: StatusProgressing,
				Reason: fmt.Sprintf("no record of this migration, and the workloads stand at %s where it last reported itself (since %s): carrying on from there",
					r.Position, r.EnteredAt.UTC().Format(time.RFC3339))}
		}
	}
	// A move that was decided but perhaps not applied is finished first,
	// as it was decided: every move asks for stable scaled up, and
	// Decommissioned still describes the position it leaves.
	if rec.Pending != nil {
		to := *rec.Pending
		return Action{Kind: Apply, To: to, Target: d.targetOf(to, false), Status: rec.Status,
			Reason: "finishing the move to " + to.String() + " that was interrupted"}
	}
	want := d.targetOf(cur, rec.Decommissioned)
	matches := o.Driver.Matches(want, o.Tolerance)
	converging := !matches && o.Driver.Converging(want)
	if !matches && !converging {
		return Action{Kind: Apply, To: cur, Target: want, Status: rec.Status,
			Reason: fmt.Sprintf("the workloads drifted: traffic %d%% mirror %d%%, want %d%% mirror %d%% at %s",
				o.Driver.Traffic, o.Driver.Mirror, want.Traffic, want.Mirror, cur)}
	}

	step, i, known := d.step(cur)

	// Backward: a lowered target moves straight there, not past a
	// completed point of no return unless forced.
	if i < 0 && d.Plan.Compare(d.Target, cur) < 0 {
		return moveBack(d, rec)
	}

	// Guardrails, while the candidate takes traffic or mirrored requests.
	green := true
	if !cur.IsStart() {
		for _, r := range o.Guardrails {
			switch r.Health.Under(d.Plan.Spec.Rollback.NoData()) {
			case Breached:
				return breach(d, rec, Failure{Guardrail: r.Name, Value: r.Value, Bound: r.Bound, Compare: r.Compare,
					What: "guardrail " + r.Name + " " + describeBreach(r)})
			case Healthy:
			default:
				green = false
			}
		}
	}

	// Feature flags follow their commit within a cycle, wherever the
	// migration stands: they are the application's, not a step's.
	if !sameFlags(rec.Flags, d.Plan.Spec.Features) {
		return Action{Kind: PublishFlags, Status: rec.Status, Reason: "publishing the plan's feature flags"}
	}

	// After a rollback or a freeze, nothing moves forward until a newer
	// commit.
	if (rec.Status == StatusRolledBack || rec.Status == StatusFrozen || rec.Status == StatusBreached) && rec.Commit == d.Commit {
		return Action{Kind: Wait, Status: rec.Status, Reason: rec.Reason}
	}

	completed := rec.NoReturn != nil && *rec.NoReturn == cur // moved back to a completed point of no return
	next, ok := d.next(cur, i)
	promote := false
	if cur == d.Target || !ok {
		// At the target. A plan that promotes itself goes on to the next
		// phase as it would leave any step, and asks for the target to
		// move there instead of moving.
		n, more := d.nextStep(cur)
		if !d.Plan.Spec.Promotes() || !more || cur.IsStart() {
			return atTarget(d, rec, o, step, green, completed, now)
		}
		next, promote = n, true
	}
	for _, f := range rec.Failed {
		if f.Position == next.Position && f.Commit == d.Commit {
			return Action{Kind: Wait, Status: StatusWaiting,
				Reason: fmt.Sprintf("%s failed under commit %s (%s); waiting for a newer commit", next.Position, shorthash.Of(f.Commit), f.Reason)}
		}
	}

	// Leaving the current step: its job, its soak with guardrails green,
	// then its checks.
	if known && !cur.IsStart() {
		if step.Run != nil && !completed {
			if a, wait := runJob(d, rec, o, step, now); wait {
				return a
			}
		}
		if !green {
			return Action{Kind: Wait, Status: StatusProgressing, Reason: "waiting for every guardrail to be healthy at " + cur.String() + notGreen(o.Guardrails, d.Plan.Spec.Rollback.NoData())}
		}
		if converging {
			// Set for this step, replicas still starting: the step is
			// not left before its split stands.
			return Action{Kind: Wait, Status: StatusProgressing,
				Reason: fmt.Sprintf("waiting for the replicas of %s to be ready: stable %d/%d, candidate %d/%d", cur,
					o.Driver.StableReady, o.Driver.StableReplicas, o.Driver.CandidateReady, o.Driver.CandidateReplicas)}
		}
		soakEnd := rec.EnteredAt
		if rec.GreenSince.After(soakEnd) {
			soakEnd = rec.GreenSince
		}
		soakEnd = soakEnd.Add(step.Soak.Std())
		if now.Before(soakEnd) {
			reason := ""
			if i >= 0 {
				reason = d.soaking[i]
			} else {
				reason = fmt.Sprintf("soaking at %s for %s", cur, step.Soak)
			}
			return Action{Kind: Wait, Status: StatusProgressing, Until: soakEnd, Reason: reason}
		}
		if a, wait := checks(d, rec, step, now); wait && !completed {
			return a
		}
	}

	// Gates on other plans: leaving start, entering a phase.
	gs, open := gates(d, o, cur, next.Position, now)
	if !open {
		var why []string
		until := time.Time{}
		for _, g := range gs {
			if !g.Open {
				why = append(why, g.Reason)
				if !g.OpensAt.IsZero() && (until.IsZero() || g.OpensAt.After(until)) {
					until = g.OpensAt
				}
			}
		}
		status := StatusWaiting
		if promote {
			status = StatusHolding
		}
		return Action{Kind: Wait, Status: status, Gates: gs, Until: until,
			Reason: strings.Join(why, "; ") + " (before " + next.Position.String() + ")"}
	}
	if promote {
		to := d.lastOfPhase(next.Phase)
		verb := "committing"
		if d.Plan.Spec.Promotion == plan.PromotionPullRequest {
			verb = "proposing"
		}
		return Action{Kind: Promote, To: to, Status: StatusHolding, Gates: gs,
			Reason: fmt.Sprintf("%s held for %s with every guardrail healthy; %s the next target, %s (promotion: %s)", cur, step.Soak, verb, next.Phase, d.Plan.Spec.Promotion)}
	}

	// A phase's checkpoint is taken before the phase starts; when the
	// migration already stands inside it (at 0%, a target below its first
	// step), it was taken on the way in.
	if next.Checkpoint != "" && next.Phase != cur.Phase {
		if cp, ok := rec.Checkpoints[next.Checkpoint]; !ok || cp.At.Before(rec.EnteredAt) || cp.Position != cur {
			return Action{Kind: Checkpoint, Checkpoint: next.Checkpoint, To: cur, Status: StatusProgressing,
				Reason: "taking checkpoint " + next.Checkpoint + " before " + next.Phase}
		}
	}
	reason := ""
	if i >= 0 {
		reason = d.advancing[i]
	} else {
		reason = advanceReason(cur, next, step)
	}
	a := Action{Kind: Advance, To: next.Position, Target: d.targetOf(next.Position, false), Status: StatusProgressing, Reason: reason, Gates: gs}
	restoring(d, rec, &a)
	return a
}

// nextStep returns the first step after pos in the whole timeline: at a
// target inside a phase (canary 10% of [5, 10, 25]), the rest of that
// phase, which a promotion asks for before the next phase.
func (d *Desired) nextStep(pos plan.Position) (plan.Step, bool) {
	for _, s := range d.timeline {
		if d.Plan.Compare(s.Position, pos) > 0 {
			return s, true
		}
	}
	return plan.Step{}, false
}

// lastOfPhase is the last step of the named phase: where a target naming
// the phase alone leads.
func (d *Desired) lastOfPhase(phase string) plan.Position {
	var out plan.Position
	for _, s := range d.timeline {
		if s.Phase == phase {
			out = s.Position
		}
	}
	return out
}

// restoring asks a, a move, to restore the checkpoint that `state restore`
// names (its annotation) when a arrives where the checkpoint was taken and
// the snapshot was not restored since it was taken: forward (from start,
// after a rollback there) as well as back. A checkpoint the record does
// not have cannot be restored, and does not hold the move.
func restoring(d *Desired, rec store.Record, a *Action) {
	if d.Restore == "" || a.To != d.Target {
		return
	}
	cp, ok := rec.Checkpoints[d.Restore]
	switch {
	case !ok:
		a.Reason += fmt.Sprintf("; checkpoint %s, which the plan asks to restore, was never taken: nothing restored", d.Restore)
	case cp.Position == a.To && !cp.Restored():
		a.Restore = d.Restore
		a.Reason += ", restoring checkpoint " + d.Restore
	}
}

// Under is h once a plan's onNoData policy (plan.Rollback.NoData) has
// applied: NoData and Error count as Breached under rollback, as Healthy
// under ignore, and stay as they are under hold. Decide, the runner and a
// backtest all read a guardrail's state through it.
func (h Health) Under(onNoData string) Health {
	if h != NoData && h != Error {
		return h
	}
	switch onNoData {
	case plan.OnNoDataRollback:
		return Breached
	case plan.OnNoDataIgnore:
		return Healthy
	}
	return h
}

// FormatValue writes a guardrail's value for people: four significant
// digits (0.4430 of an error rate is 0.443), whole numbers as they are.
func FormatValue(v float64) string {
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func describeBreach(r Reading) string {
	switch r.Health {
	case NoData:
		return "has no data (onNoData: rollback)"
	case Error:
		return "cannot be evaluated (onNoData: rollback): " + r.Detail
	}
	s := "is " + FormatValue(r.Value)
	if r.Compare != nil {
		s = "is " + r.Compare.String()
	}
	if r.Bound != "" {
		s += ", " + r.Bound
	}
	return s
}

// NoSeriesHint says what to do about a query that returns no series: the
// error-rate query of a service with no errors yet, typically, which holds a
// migration for ever under onNoData: hold.
const NoSeriesHint = "a query that returns no series holds the migration (onNoData); when no series means 0, as for an error count with no errors yet, end the query with `or vector(0)`"

func notGreen(rs []Reading, onNoData string) string {
	var parts []string
	noData := false
	for _, r := range rs {
		if h := r.Health.Under(onNoData); h != Healthy {
			parts = append(parts, r.Name+" "+string(h))
			noData = noData || h == NoData
		}
	}
	s := " (" + strings.Join(parts, ", ") + ")"
	if noData {
		s += "; " + NoSeriesHint
	}
	return s
}

// breach decides what a failure at the current position does: roll back,
// freeze past a point of no return, or hold when automatic rollback is off.
func breach(d *Desired, rec store.Record, f Failure) Action {
	cur := rec.Position
	step, _, ok := d.step(cur)
	on := step.OnBreach
	if !ok {
		on = plan.Breach{Action: plan.BreachRollback, To: &plan.Start}
	}
	// Past a completed point of no return a breach freezes in place: moving
	// traffic back to the irreversible step, or beyond it, undoes nothing
	// of what it did. Only a rollback.to naming that phase itself goes
	// back to it, as the plan asks.
	if fl, ok := d.floor(rec); ok && on.Action == plan.BreachRollback {
		if c := d.Plan.Compare(*on.To, fl); c < 0 || c == 0 && d.Plan.Spec.Rollback.Target() != fl.Phase {
			on = plan.Breach{Action: plan.BreachFreeze}
		}
	}
	switch on.Action {
	case plan.BreachHold:
		return Action{Kind: Wait, Failure: &f, Status: StatusBreached,
			Reason: f.What + " at " + cur.String() + "; automatic rollback is off, holding"}
	case plan.BreachFreeze:
		if rec.Status == StatusFrozen && rec.Commit == d.Commit {
			return Action{Kind: Wait, Status: StatusFrozen, Reason: rec.Reason}
		}
		return Action{Kind: Freeze, To: cur, Failure: &f, Status: StatusFrozen,
			Reason: f.What + " at " + cur.String() + ", past the point of no return: holding the position"}
	}
	to := *on.To
	return Action{Kind: Rollback, To: to, Target: d.targetOf(to, false), Failure: &f, Status: StatusRolledBack,
		Reason: f.What + " at " + cur.String() + "; rolling back to " + to.String()}
}

func moveBack(d *Desired, rec store.Record) Action {
	cur, to := rec.Position, d.Target
	if fl, ok := d.floor(rec); ok && d.Plan.Compare(to, fl) < 0 {
		if !d.Force {
			if cur == fl {
				return Action{Kind: Wait, Status: StatusFrozen,
					Reason: fmt.Sprintf("target %s lies before the point of no return %s; moving back past it needs rollback --force", to, fl.Phase)}
			}
			to = fl
		} else {
			var checkpoint string
			if i := d.Plan.PhaseIndex(fl.Phase); i >= 0 {
				checkpoint = d.Plan.Spec.Phases[i].Checkpoint
			}
			if cp, ok := rec.Checkpoints[checkpoint]; ok && cp.Restored() {
				checkpoint = "" // restored already by an earlier forced move
			}
			return Action{Kind: MoveBack, To: to, Target: d.targetOf(to, false), Restore: checkpoint, Status: StatusProgressing,
				Reason: fmt.Sprintf("rollback by commit %s: target lowered to %s, forced past the point of no return %s", shorthash.Of(d.Commit), to, fl.Phase)}
		}
	}
	a := Action{Kind: MoveBack, To: to, Target: d.targetOf(to, false), Status: StatusProgressing,
		Reason: fmt.Sprintf("rollback by commit %s: target lowered to %s", shorthash.Of(d.Commit), to)}
	// The annotation `state restore` leaves asks for the checkpoint's
	// snapshot on the way to where it was taken, once: it stays in the
	// plan, and a later move there restores nothing unless the snapshot
	// was taken again since.
	restoring(d, rec, &a)
	return a
}

// atTarget decides what to do at rest: run the job and checks of a run
// phase, decommission stable when due, publish flags, or hold.
func atTarget(d *Desired, rec store.Record, o Observed, step plan.Step, green, completed bool, now time.Time) Action {
	// A run phase is its job: a target there asks for the job to run to
	// completion and be verified, as it is on the way past.
	if step.Run != nil && !completed && !rec.Position.IsStart() {
		if a, wait := runJob(d, rec, o, step, now); wait {
			return a
		}
		if a, wait := checks(d, rec, step, now); wait {
			return a
		}
	}
	if step.Decommission != nil && !rec.Decommissioned {
		due := rec.EnteredAt.Add(step.Decommission.Std())
		switch {
		case !green:
		case now.Before(due):
			return Action{Kind: Wait, Status: StatusHolding, Until: due,
				Reason: fmt.Sprintf("%s; stable is decommissioned at %s", d.holding, due.UTC().Format(time.RFC3339))}
		default:
			return Action{Kind: Decommission, To: rec.Position, Target: d.targetOf(rec.Position, true), Status: StatusCompleted,
				Reason: fmt.Sprintf("%s held for %s: scaling stable to zero", rec.Position, step.Decommission)}
		}
	}
	status := StatusHolding
	if rec.Decommissioned || (step.Decommission == nil && rec.Position == lastPosition(d)) {
		status = StatusCompleted
	}
	return Action{Kind: Wait, Status: status, Reason: d.holding}
}

func lastPosition(d *Desired) plan.Position {
	if len(d.timeline) == 0 {
		return plan.Start
	}
	return d.timeline[len(d.timeline)-1].Position
}

func sameFlags(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if w, ok := a[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// runJob handles the job of a run phase: start it, wait for it, fail on an
// error or a timeout. It returns wait=false once the job has succeeded.
func runJob(d *Desired, rec store.Record, o Observed, step plan.Step, now time.Time) (Action, bool) {
	id := JobID(d.Plan.Metadata.Name, step.Phase, rec.EnteredAt)
	job := rec.Job
	if job == nil || job.ID != id {
		return Action{Kind: StartJob, To: rec.Position, JobID: id, Run: step.Run, Status: StatusProgressing,
			Reason: "starting the job of " + step.Phase + " (" + step.Run.Image + ")"}, true
	}
	status := o.Job
	if job.Done {
		status = &drivers.JobStatus{Done: true, Succeeded: job.Succeeded, Message: job.Message}
	}
	if status != nil && status.Done {
		if status.Succeeded {
			return Action{}, false
		}
		return breach(d, rec, Failure{What: "the job of " + step.Phase + " failed: " + status.Message}), true
	}
	if t := step.Run.Timeout.Std(); t > 0 && !now.Before(job.StartedAt.Add(t)) {
		return breach(d, rec, Failure{What: fmt.Sprintf("the job of %s timed out after %s", step.Phase, step.Run.Timeout)}), true
	}
	a := Action{Kind: Wait, Status: StatusProgressing, Reason: "waiting for the job of " + step.Phase + " (" + id + ")"}
	if t := step.Run.Timeout.Std(); t > 0 {
		a.Until = job.StartedAt.Add(t)
	}
	return a, true
}

// JobID names the job of a run phase entered at a time: stable across
// restarts, new for every entry into the phase.
func JobID(planName, phase string, entered time.Time) string {
	return fmt.Sprintf("%s-%s-%d", planName, phase, entered.Unix())
}

// checks handles the verify checks of a step: run the missing ones, wait for
// pending ones, fail on a failed one. Results from before the step was
// entered do not count.
func checks(d *Desired, rec store.Record, step plan.Step, now time.Time) (Action, bool) {
	var missing []string
	pending := false
	for _, name := range step.Verify {
		r, ok := rec.Checks[name]
		switch {
		case !ok || r.At.Before(rec.EnteredAt):
			missing = append(missing, name)
		case r.Pending:
			pending = true
		case !r.Passed:
			return breach(d, rec, Failure{What: "check " + name + " failed: " + r.Message}), true
		}
	}
	if len(missing) > 0 {
		return Action{Kind: RunChecks, To: rec.Position, Checks: missing, Status: StatusProgressing,
			Reason: "running checks " + strings.Join(missing, ", ") + " before leaving " + rec.Position.String()}, true
	}
	if pending {
		return Action{Kind: Wait, Status: StatusProgressing, Reason: "waiting for the checks of " + rec.Position.String()}, true
	}
	return Action{}, false
}

func advanceReason(cur plan.Position, next, step plan.Step) string {
	if cur.IsStart() {
		return "starting the migration at " + next.Position.String()
	}
	s := fmt.Sprintf("%s held for %s with every guardrail healthy", cur, step.Soak)
	if len(step.Verify) > 0 {
		s += " and checks " + strings.Join(step.Verify, ", ") + " passed"
	}
	return s + "; advancing to " + next.Position.String()
}
