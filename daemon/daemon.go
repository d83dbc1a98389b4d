// Package daemon is the reconciler's loop: it follows a branch of a Git
// repository of plans, hands the valid ones to the reconcile.Runner, and
// writes back to Git what happened: a status file per plan on every
// transition, and a commit lowering spec.target after every automatic
// rollback. It keeps the last good version of a plan when a commit breaks
// it. It does not decide anything itself: reconcile does.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// Git is what the daemon needs of the plan repository.
type Git interface {
	gitops.Reader
	gitops.Writer
}

// Daemon runs the loop. Set the fields, then call Run.
type Daemon struct {
	Git       Git
	Validator *plan.Validator
	Runner    *reconcile.Runner
	Store     store.Store
	Clock     clock.WithTicker
	// Poll is how often the branch head is checked when no webhook
	// arrives (default 1m); Interval how often plans are reconciled
	// (default 30s).
	Poll, Interval time.Duration
	// Author signs the daemon's commits; StatusDir holds the status files
	// ("status"); SkipCI adds "[skip ci]" to their messages.
	Author    gitops.Signature
	StatusDir string
	SkipCI    bool
	Log       *slog.Logger
	// RequireSignedAdvance gates advances on signatures: commits that are
	// not all signed by a trusted key (gitops.Snapshot.Signed) cannot move
	// a plan's target forward; the plan's previous version is kept and the
	// status says AdvanceNotSigned. After a restart the repository is told
	// where the daemon left off (the commit of the record saved last), so
	// that a push made meanwhile is judged whole. Targets that stay or move back are
	// followed as usual: a rollback never waits for a signature. Set it
	// when the repository is opened with trusted keys.
	RequireSignedAdvance bool
	// Metrics, when set, is told about every sync, cycle, decision and
	// rollback.
	Metrics Metrics
	// Prober, when set, lets pre-check reach the metrics backend and run
	// each query once.
	Prober Prober

	mu        sync.Mutex
	head      gitops.Hash              // the head last synced
	human     gitops.Hash              // the last commit that was not the daemon's own
	byFile    map[string]*plan.Plan    // the last good plan of each file
	invalid   map[string]plan.Errors   // the errors of files broken at head, by file
	held      map[string]Condition     // advances kept back at head for want of a signature, by file
	written   map[string]string        // the status file last committed, by plan
	rollbacks []pendingRollback        // rollbacks not yet committed
	views     map[string]view          // the latest decision, by plan
	resume    map[string]*store.Record // where each plan's status file at head says it is
	synced    bool                     // a sync has succeeded
	reported  map[string]bool          // plans last handed to Metrics
	wake      chan struct{}
}

// Metrics is what the daemon reports to its own metrics.
type Metrics interface {
	ObserveMigration(p *plan.Plan, rec store.Record)
	ObserveGuardrails(plan string, readings []reconcile.Reading)
	RolledBack(plan string)
	SetConditions(plan string, types []string)
	ReconcileDone(took time.Duration)
	GitSynced(took time.Duration, err error)
	Forget(plan string)
}

// pendingRollback is a rollback applied to the workloads whose commit has
// not reached Git yet.
type pendingRollback struct {
	plan   *plan.Plan
	action reconcile.Action
	from   plan.Position
	// base is the target the plan file held when the rollback was
	// decided. The commit lowers the target only from there: a file whose
	// target moved meanwhile holds a person's newer decision.
	base  plan.Position
	tries int
	err   error
}

func (d *Daemon) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Wake asks the loop to check the branch now (a webhook arrived).
func (d *Daemon) Wake() {
	d.init()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Daemon) init() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wake == nil {
		d.wake = make(chan struct{}, 1)
		d.byFile = map[string]*plan.Plan{}
		d.invalid = map[string]plan.Errors{}
		d.held = map[string]Condition{}
		d.written = map[string]string{}
		d.resume = map[string]*store.Record{}
	}
	if d.StatusDir == "" {
		d.StatusDir = "status"
	}
}

// Run syncs and reconciles until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	d.init()
	d.Runner.OnRollback = d.onRollback
	if d.Poll <= 0 {
		d.Poll = time.Minute
	}
	if d.Interval <= 0 {
		d.Interval = 30 * time.Second
	}
	reconcileTick := d.Clock.NewTicker(d.Interval)
	defer reconcileTick.Stop()
	pollTick := d.Clock.NewTicker(d.Poll)
	defer pollTick.Stop()
	// The branch is checked at start, on a wake and every Poll; the
	// reconcile ticks in between do not list the remote's refs.
	check := true
	for {
		if err := d.step(ctx, check); err != nil && ctx.Err() == nil {
			d.log().Error("step", "err", err)
		}
		check = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.wake:
			check = true
		case <-pollTick.C():
			check = true
		case <-reconcileTick.C():
		}
	}
}

// Step syncs the branch if its head moved, reconciles every plan once, and
// commits what changed.
func (d *Daemon) Step(ctx context.Context) error { return d.step(ctx, true) }

// step is Step, checking the branch's head only when check is set.
func (d *Daemon) step(ctx context.Context, check bool) error {
	d.init()
	if d.Runner.OnRollback == nil {
		d.Runner.OnRollback = d.onRollback
	}
	if d.Runner.OnDecided == nil {
		d.Runner.OnDecided = d.onDecided
	}
	if check {
		started := d.Clock.Now()
		err := d.sync(ctx)
		if d.Metrics != nil {
			d.Metrics.GitSynced(d.Clock.Since(started), err)
		}
		if err != nil {
			// Keep reconciling the plans we have: Git being away must
			// not stop a rollback.
			d.log().Error("sync", "err", err)
		}
	}
	desired := d.desired()
	started := d.Clock.Now()
	results := d.Runner.Cycle(ctx, desired)
	for _, r := range results {
		if r.Err != nil {
			d.log().Error("reconcile", "plan", r.Plan, "err", r.Err)
		}
	}
	if d.Metrics != nil {
		d.Metrics.ReconcileDone(d.Clock.Since(started))
	}
	d.observeMigrations(ctx, desired)
	d.commitRollbacks(ctx)
	return d.commitStatus(ctx, desired)
}

// forgetter is implemented by the parts that keep state per plan (the
// guardrail evaluator's `for` windows), to drop it when a plan goes.
type forgetter interface{ Forget(plan string) }

// observeMigrations hands every plan's record to the metrics, and tells
// the metrics and the guardrails to forget plans no longer followed.
func (d *Daemon) observeMigrations(ctx context.Context, desired []*reconcile.Desired) {
	now := map[string]bool{}
	for _, ds := range desired {
		name := ds.Plan.Metadata.Name
		now[name] = true
		if d.Metrics == nil {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil {
			d.log().Error("load record for metrics", "plan", name, "err", err)
			continue
		}
		d.Metrics.ObserveMigration(ds.Plan, rec)
	}
	d.mu.Lock()
	var gone []string
	for name := range d.reported {
		if !now[name] {
			gone = append(gone, name)
			delete(d.views, name)
		}
	}
	d.reported = now
	d.mu.Unlock()
	for _, name := range gone {
		if d.Metrics != nil {
			d.Metrics.Forget(name)
		}
		if f, ok := d.Runner.Guards.(forgetter); ok {
			f.Forget(name)
		}
	}
}

// sync reads the plans at the branch head when it moved.
func (d *Daemon) sync(ctx context.Context) error {
	head, err := d.Git.Head(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	same := head == d.head
	d.mu.Unlock()
	if same {
		return nil
	}
	if d.RequireSignedAdvance {
		if err := d.resumeSignatureChecks(ctx); err != nil {
			return err
		}
	}
	snap, err := d.Git.Sync(ctx)
	if err != nil {
		return err
	}
	set := d.Validator.Validate(snap.Files)
	// The plans as the previous sync left them, for the rename, the gate
	// and the status files below.
	d.mu.Lock()
	before := maps.Clone(d.byFile)
	human := d.human
	d.mu.Unlock()
	if err := d.carryRenamed(ctx, set.Plans, before, snap.Commit); err != nil {
		return err
	}
	held := map[string]gated{}
	if d.RequireSignedAdvance && !snap.Signed {
		// The daemon's own commits are not exempt: they never advance a
		// target themselves, so the gate only goes on keeping an unsigned
		// person's advance that sits below them.
		if !snap.Own || human == "" {
			human = snap.Commit
		}
		for _, p := range set.Plans {
			if g, ok := d.gate(ctx, p, before[p.File], snap, human); ok {
				held[p.File] = g
			}
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	d.synced = true
	d.head = snap.Commit
	if !snap.Own || d.human == "" {
		d.human = snap.Commit
	}
	present := map[string]bool{}
	for _, f := range snap.Files {
		present[f.Path] = true
	}
	for file := range d.byFile {
		if !present[file] {
			d.log().Info("plan file removed; its migration is left where it is", "file", file, "commit", snap.Commit)
			delete(d.byFile, file)
		}
	}
	d.readStatus(set.Plans, before)
	clear(d.invalid)
	for _, e := range set.Errors {
		d.invalid[e.File] = append(d.invalid[e.File], e)
	}
	clear(d.held)
	for _, p := range set.Plans {
		if g, ok := held[p.File]; ok {
			d.held[p.File] = g.cond
			d.log().Warn("commits move the target forward without a trusted signature; keeping the previous target",
				"plan", p.Metadata.Name, "commit", snap.Commit, "signature", g.cond.Message)
			if g.keep == nil {
				delete(d.byFile, p.File)
			} else {
				d.byFile[p.File] = g.keep
			}
			continue
		}
		d.byFile[p.File] = p
	}
	for file, errs := range d.invalid {
		if last, ok := d.byFile[file]; ok {
			d.log().Warn("plan invalid at this commit; keeping its last good version", "plan", last.Metadata.Name,
				"commit", snap.Commit, "errors", errs.Error())
		}
	}
	return nil
}

// resumeSignatureChecks tells a repository that has not synced yet where
// the daemon left off: the commit of the record saved last. A push made
// while the daemon was down then has every commit judged, not only its
// newest.
func (d *Daemon) resumeSignatureChecks(ctx context.Context) error {
	d.mu.Lock()
	synced := d.synced
	d.mu.Unlock()
	r, ok := d.Git.(interface{ CheckSignaturesSince(gitops.Hash) })
	if synced || !ok {
		return nil
	}
	recs, err := d.Store.LoadAll(ctx)
	if err != nil {
		return fmt.Errorf("load records to resume signature checks: %w", err)
	}
	var last store.Record
	for _, rec := range recs {
		if rec.Commit != "" && rec.UpdatedAt.After(last.UpdatedAt) {
			last = rec
		}
	}
	if last.Commit != "" {
		r.CheckSignaturesSince(gitops.Hash(last.Commit))
	}
	return nil
}

// carryRenamed carries a migration's record over to its plan's new name.
// A plan is a new name for one that was there before when the old name is
// gone at this commit and the new one drives the same workloads (the same
// spec.driver): without the record, the new name would start at start and
// pull the candidate's traffic back to stable. The newer record of the two
// names wins, so renaming back and forth keeps the migration where it is.
func (d *Daemon) carryRenamed(ctx context.Context, plans []*plan.Plan, before map[string]*plan.Plan, commit gitops.Hash) error {
	now, was := nameSet(plans), nameSet(slices.Collect(maps.Values(before)))
	for _, p := range plans {
		if was[p.Metadata.Name] {
			continue
		}
		for _, q := range before {
			if now[q.Metadata.Name] || !reflect.DeepEqual(q.Spec.Driver, p.Spec.Driver) {
				continue
			}
			old, err := d.Store.Load(ctx, q.Metadata.Name)
			if err != nil {
				return fmt.Errorf("load the record of %s, renamed %s: %w", q.Metadata.Name, p.Metadata.Name, err)
			}
			cur, err := d.Store.Load(ctx, p.Metadata.Name)
			if err != nil {
				return fmt.Errorf("load the record of %s: %w", p.Metadata.Name, err)
			}
			if old.Version == 0 || (cur.Version > 0 && !old.UpdatedAt.After(cur.UpdatedAt)) {
				break
			}
			rec := old
			rec.Plan, rec.Version = p.Metadata.Name, cur.Version
			reason := fmt.Sprintf("plan %s renamed %s at commit %s: its migration carries on at %s", q.Metadata.Name, p.Metadata.Name, short(string(commit)), old.Position)
			if _, err := d.Store.Save(ctx, rec, store.Event{At: d.Clock.Now(), Kind: "Renamed", From: old.Position, To: old.Position,
				Commit: string(commit), Reason: reason}); err != nil {
				return fmt.Errorf("carry the record of %s over to %s: %w", q.Metadata.Name, p.Metadata.Name, err)
			}
			d.Runner.Forget() // the runner may hold a record of the new name from an earlier life
			d.log().Info(reason, "plan", p.Metadata.Name)
			break
		}
	}
	return nil
}

// nameSet is the set of the plans' names.
func nameSet(plans []*plan.Plan) map[string]bool {
	set := make(map[string]bool, len(plans))
	for _, p := range plans {
		set[p.Metadata.Name] = true
	}
	return set
}

// readStatus reads, at the synced head, where the status file of each plan
// new since the previous sync says its migration is: a daemon whose store
// lost a plan's record carries on from there when the workloads stand there
// (reconcile.Desired.Resume). The plans it already followed keep what was
// read when they appeared, so the daemon's own status commits read nothing
// again. A missing or unreadable status file is no resume point. It holds
// d.mu.
func (d *Daemon) readStatus(plans []*plan.Plan, before map[string]*plan.Plan) {
	now, was := nameSet(plans), nameSet(slices.Collect(maps.Values(before)))
	maps.DeleteFunc(d.resume, func(name string, _ *store.Record) bool { return !now[name] })
	files, ok := d.Git.(interface {
		ReadFile(path string) ([]byte, error)
	})
	if !ok {
		return
	}
	for _, p := range plans {
		name := p.Metadata.Name
		if was[name] {
			continue
		}
		b, err := files.ReadFile(d.StatusDir + "/" + name + ".yaml")
		if err != nil {
			continue
		}
		if rec, err := resumeFrom(b, name); err != nil {
			d.log().Warn("status file not usable to resume from", "plan", name, "err", err)
		} else {
			d.resume[name] = rec
		}
	}
}

// resumeFrom reads a status file into the record it describes.
func resumeFrom(b []byte, name string) (*store.Record, error) {
	var st Status
	if err := yaml.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Kind != "MigrationStatus" || st.Metadata.Name != name {
		return nil, fmt.Errorf("not the status of %s", name)
	}
	s := st.Status
	rec := &store.Record{Plan: name, Position: plan.Position{Phase: s.Phase, Percentage: s.Percentage},
		EnteredAt: s.Since, Status: s.State, Commit: s.Commit, Decommissioned: s.Decommissioned}
	if s.Phase == plan.RollbackStart {
		rec.Position = plan.Start
	}
	for _, f := range s.Failed {
		at, err := plan.ParsePosition(f.Position)
		if err != nil {
			return nil, fmt.Errorf("failed position: %w", err)
		}
		rec.Failed = append(rec.Failed, store.Failure{Position: at, Commit: f.Commit, Reason: f.Reason, At: f.At})
	}
	return rec, nil
}

// gated is a plan whose advance is kept back: keep is the version to
// follow instead (nil: none, the plan is new), cond what the status says.
type gated struct {
	keep *plan.Plan
	cond Condition
}

// gate decides whether p, read at an unsigned head, advances its target
// beyond prev's, the file's last good version, and what to keep if so.
// The condition names human, the last commit that is not the daemon's own:
// naming a status commit of the daemon's would change the status, and so
// make another status commit, at every step. With
// no previous version (a new plan, or a restarted daemon) the old target is
// the recorded position: a new plan beyond start is an advance and is not
// followed; a known one is followed with its target held at where it is,
// so that its guardrails and rollbacks go on working.
func (d *Daemon) gate(ctx context.Context, p *plan.Plan, prev *plan.Plan, snap gitops.Snapshot, human gitops.Hash) (gated, bool) {
	var (
		old  plan.Position
		keep *plan.Plan
	)
	if prev != nil {
		old, keep = p.Resolve(prev.Spec.Target), prev
	} else {
		rec, err := d.Store.Load(ctx, p.Metadata.Name)
		if err != nil {
			// Unknown: hold from start, the safe side of an advance.
			d.log().Error("load record for the signature gate", "plan", p.Metadata.Name, "err", err)
		} else if !rec.Position.IsStart() {
			q := *p
			q.Spec.Target = p.TargetFor(rec.Position)
			old, keep = rec.Position, &q
		}
	}
	if p.Compare(p.TargetPosition(), old) <= 0 {
		return gated{}, false
	}
	why := snap.SignatureProblem
	if why == "" {
		why = "no signature checked"
	}
	kept := old.String()
	if keep == nil {
		kept = "start; the new plan is not followed"
	}
	return gated{keep: keep, cond: Condition{Type: "AdvanceNotSigned", Commit: string(human),
		Message: fmt.Sprintf("commit %s moves the target forward without a trusted signature (%s); keeping %s",
			short(string(human)), why, kept)}}, true
}

// desired is every plan to reconcile, at the last human commit.
func (d *Daemon) desired() []*reconcile.Desired {
	d.mu.Lock()
	defer d.mu.Unlock()
	files := make([]string, 0, len(d.byFile))
	for f := range d.byFile {
		files = append(files, f)
	}
	slices.Sort(files)
	out := make([]*reconcile.Desired, 0, len(files))
	seen := map[string]bool{}
	for _, f := range files {
		p := d.byFile[f]
		if seen[p.Metadata.Name] {
			continue // the same name in two files: the loader reports it
		}
		seen[p.Metadata.Name] = true
		ds := reconcile.NewDesired(p, string(d.human))
		// A forced rollback names the target it forces, so that the
		// annotation left in the plan forces nothing later.
		ds.Force = p.Metadata.Annotations[plan.ForceRollbackAnnotation] == ds.Target.String()
		ds.Restore = p.Metadata.Annotations[plan.RestoreCheckpointAnnotation]
		ds.Resume = d.resume[p.Metadata.Name]
		out = append(out, ds)
	}
	return out
}

// onRollback queues the commit of a rollback or a freeze: the live
// rollback has been applied and recorded already.
func (d *Daemon) onRollback(_ context.Context, desired *reconcile.Desired, a reconcile.Action) {
	d.mu.Lock()
	defer d.mu.Unlock()
	from := plan.Position{}
	if rec, err := d.Store.Load(context.Background(), desired.Plan.Metadata.Name); err == nil && len(rec.Failed) > 0 {
		from = rec.Failed[len(rec.Failed)-1].Position
	}
	d.rollbacks = append(d.rollbacks, pendingRollback{plan: desired.Plan, action: a, from: from, base: desired.Plan.TargetPosition()})
	if d.Metrics != nil && a.Kind == reconcile.Rollback {
		d.Metrics.RolledBack(desired.Plan.Metadata.Name)
	}
}

// commitRollbacks writes each pending rollback to its plan file. A push
// that fails leaves the rollback queued (the live rollback stands) and the
// status says RollbackNotCommitted. A rollback whose plan file has had its
// target moved by a person meanwhile changes nothing: the person's commit
// is the newer decision, and the rollback stays recorded in the status.
func (d *Daemon) commitRollbacks(ctx context.Context) {
	d.mu.Lock()
	pending := d.rollbacks
	d.rollbacks = nil
	d.mu.Unlock()
	var keep []pendingRollback
	for i, rb := range pending {
		if rb.action.Kind != reconcile.Rollback {
			continue // a freeze keeps the target: nothing to commit
		}
		file, ok := d.fileOf(rb.plan.Metadata.Name)
		if !ok {
			d.log().Warn("the plan file is gone; its rollback is not committed", "plan", rb.plan.Metadata.Name,
				"rollback", rb.from.String()+" → "+rb.action.To.String())
			continue
		}
		var moved bool
		_, err := d.Git.Commit(ctx, d.rollbackCommit(rb, file, &moved))
		if err != nil {
			rb.tries++
			rb.err = err
			d.log().Error("rollback not committed", "plan", rb.plan.Metadata.Name, "try", rb.tries, "err", err)
			keep = append(keep, rb)
			continue
		}
		if moved {
			d.log().Info("a commit moved the target before the rollback was committed; the plan file keeps that target",
				"plan", rb.plan.Metadata.Name, "rollback", rb.from.String()+" → "+rb.action.To.String())
			continue
		}
		// A later rollback of the same plan, decided before this one
		// landed, lowers the target from where this one left it.
		landed := rb.plan.Resolve(rb.plan.TargetFor(rb.action.To))
		for j := i + 1; j < len(pending); j++ {
			if pending[j].plan.Metadata.Name == rb.plan.Metadata.Name && pending[j].base == rb.base {
				pending[j].base = landed
			}
		}
	}
	d.mu.Lock()
	d.rollbacks = append(keep, d.rollbacks...)
	d.mu.Unlock()
}

// fileOf returns the file that holds the plan named name at the head last
// synced: a plan moved to another file since its rollback was decided is
// committed where it is now, and one removed has no file.
func (d *Daemon) fileOf(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var files []string
	for f, p := range d.byFile {
		if p.Metadata.Name == name {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return "", false
	}
	return slices.Min(files), true // the one desired follows
}

// rollbackCommit rewrites spec.target of file, the plan's file, to the
// rollback position, keeping every other byte, with a message that says
// why. When the file's target is no longer rb.base it changes nothing and
// sets *moved.
func (d *Daemon) rollbackCommit(rb pendingRollback, file string, moved *bool) gitops.CommitRequest {
	p, a := rb.plan, rb.action
	to := a.To
	target := p.TargetFor(to)
	var why string
	if f := a.Failure; f != nil && f.Guardrail != "" {
		why = fmt.Sprintf("Guardrail %s was %s, over its bound %s, at %s.", f.Guardrail, reconcile.FormatValue(f.Value), f.Bound, rb.from)
	} else if f != nil {
		why = strings.ToUpper(f.What[:1]) + f.What[1:] + " at " + rb.from.String() + "."
	}
	msg := fmt.Sprintf("rollback(%s): %s → %s\n\n%s\nhal9-migrate rolled the migration back to %s and sets spec.target to match, so that\nGit says where the migration is. A newer commit is needed to advance again.",
		p.Metadata.Name, rb.from, to, why, to)
	if to.IsStart() {
		msg += "\nAt start the candidate takes no traffic; the target is the first phase, which the\nrecorded failure keeps from being entered again under this commit."
	}
	if d.SkipCI {
		msg = "[skip ci] " + msg
	}
	return gitops.CommitRequest{
		Message: msg,
		Author:  d.Author,
		Trailers: map[string]string{
			"Hal9-Migrate-Plan":   p.Metadata.Name,
			"Hal9-Migrate-Action": "rollback",
			"Hal9-Migrate-From":   rb.from.String(),
			"Hal9-Migrate-To":     to.String(),
		},
		Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
			data, err := read(file)
			if err != nil {
				return nil, err // it names the file
			}
			cur, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: data})
			if err != nil {
				return nil, fmt.Errorf("%s is invalid at the branch head: %w", file, err)
			}
			if *moved = cur.TargetPosition() != rb.base; *moved {
				return nil, nil
			}
			edited, err := plan.ApplyEdits(file, data, plan.SetTarget(target))
			if err != nil {
				return nil, err
			}
			if _, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: edited}); err != nil {
				return nil, fmt.Errorf("the rollback would leave %s invalid: %w", file, err)
			}
			return map[string][]byte{file: edited}, nil
		},
	}
}

// commitStatus commits the status files that changed since last written,
// in one commit.
func (d *Daemon) commitStatus(ctx context.Context, desired []*reconcile.Desired) error {
	changes := map[string][]byte{}
	names := map[string]string{}
	var summary []string
	for _, ds := range desired {
		name := ds.Plan.Metadata.Name
		rec, err := d.Store.Load(ctx, name)
		if err != nil {
			return err
		}
		history, err := d.Store.History(ctx, name, 10)
		if err != nil {
			return err
		}
		d.mu.Lock()
		st := d.statusOf(ds, rec, history)
		d.mu.Unlock()
		if d.Metrics != nil {
			types := make([]string, 0, len(st.Status.Conditions))
			for _, c := range st.Status.Conditions {
				types = append(types, c.Type)
			}
			d.Metrics.SetConditions(name, types)
		}
		body, err := st.Marshal()
		if err != nil {
			return err
		}
		key := st.Key()
		d.mu.Lock()
		same := d.written[name] == key
		d.mu.Unlock()
		if same {
			continue
		}
		changes[d.StatusDir+"/"+name+".yaml"] = body
		names[name] = key
		summary = append(summary, fmt.Sprintf("%s %s at %s", name, st.Status.State, rec.Position))
	}
	if len(changes) == 0 {
		return nil
	}
	msg := "status: " + strings.Join(summary, "; ")
	if d.SkipCI {
		msg = "[skip ci] " + msg
	}
	_, err := d.Git.Commit(ctx, gitops.CommitRequest{
		Message:  msg,
		Author:   d.Author,
		Trailers: map[string]string{"Hal9-Migrate-Action": "status"},
		Changes: func(func(string) ([]byte, error)) (map[string][]byte, error) {
			return changes, nil
		},
	})
	if err != nil {
		return fmt.Errorf("commit status: %w", err)
	}
	d.mu.Lock()
	for n, k := range names {
		d.written[n] = k
	}
	d.mu.Unlock()
	return nil
}

// statusOf builds a plan's status document. It holds d.mu.
func (d *Daemon) statusOf(ds *reconcile.Desired, rec store.Record, history []store.Event) Status {
	st := Status{APIVersion: plan.APIVersion, Kind: "MigrationStatus"}
	st.Metadata.Name = ds.Plan.Metadata.Name
	s := &st.Status
	s.Phase, s.Percentage = rec.Position.Phase, rec.Position.Percentage
	if rec.Position.IsStart() {
		s.Phase = "start"
	}
	s.Target = ds.Target.String()
	s.Since = rec.EnteredAt
	s.State, s.Reason = rec.Status, rec.Reason
	s.Commit = string(d.human)
	s.Decommissioned = rec.Decommissioned
	if errs, ok := d.invalid[ds.Plan.File]; ok {
		// The person's commit, not the head: the head is often the
		// daemon's own status commit, and naming it would change the
		// status, which would be committed, which would change the head.
		s.Conditions = append(s.Conditions, Condition{Type: "PlanInvalid", Commit: string(d.human),
			Message: "the plan is invalid at " + short(string(d.human)) + "; following its last good version: " + errs.Error()})
	}
	if c, ok := d.held[ds.Plan.File]; ok {
		s.Conditions = append(s.Conditions, c)
	}
	for _, rb := range d.rollbacks {
		if rb.plan.Metadata.Name == ds.Plan.Metadata.Name && rb.err != nil {
			s.Conditions = append(s.Conditions, Condition{Type: "RollbackNotCommitted",
				Message: fmt.Sprintf("rolled back to %s, but the commit could not be pushed after %d tries: %v", rb.action.To, rb.tries, rb.err)})
		}
	}
	for _, f := range rec.Failed {
		s.Failed = append(s.Failed, FailedPosition{Position: f.Position.String(), Commit: f.Commit, Reason: f.Reason, At: f.At})
	}
	for _, e := range history {
		if e.Kind == "Entered" {
			continue
		}
		s.History = append(s.History, HistoryEntry{At: e.At, Action: e.Kind, From: e.From.String(), To: e.To.String(), Reason: e.Reason})
	}
	return st
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
