package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// pendingRollback is a rollback applied to the workloads whose commit has
// not reached Git yet: the steps of one chain (a fault that persists walks
// down one step per `for`), committed together. base is the target the
// plan file held when the chain began: the commit lowers the target only
// from there, since a target a person moved meanwhile is their newer
// decision.
type pendingRollback struct {
	steps []rollbackStep
	base  plan.Position
	tries int
	err   error
}

// rollbackStep is one automatic rollback, as its commit message tells it.
type rollbackStep struct {
	from, to plan.Position
	failure  *reconcile.Failure
}

// writtenStatus is what the daemon last committed of a plan's status.
type writtenStatus struct {
	key   string
	sum   string // of the file's content
	at    time.Time
	state string
	conds string
}

// onRollback queues the commit of a rollback, and has a freeze's status
// committed at once: the live rollback has been applied and recorded
// already. It runs on the safety loop and never blocks on Git.
func (d *Daemon) onRollback(_ context.Context, desired *reconcile.Desired, a reconcile.Action) {
	name := desired.Plan.Metadata.Name
	if a.Kind == reconcile.Rollback {
		from := plan.Position{}
		// The record names the position that failed; the runner saved it
		// before calling.
		if rec, err := d.Store.Load(context.Background(), name); err == nil && len(rec.Failed) > 0 {
			from = rec.Failed[len(rec.Failed)-1].Position
		}
		d.mu.Lock()
		pr, ok := d.rollbacks[name]
		if !ok {
			pr.base = desired.Target
		}
		pr.steps = append(pr.steps, rollbackStep{from: from, to: a.To, failure: a.Failure})
		d.rollbacks[name] = pr
		d.mu.Unlock()
		if d.Metrics != nil {
			d.Metrics.RolledBack(name)
		}
	}
	signal(d.wakeCommit)
}

// commitRollbacks commits, for every plan whose migration an automatic
// rollback left below the target its file names, the rollback's target, so
// that Git names the live position. A rollback whose commit a restart lost
// is found again from the records. A push that fails leaves it owed (the
// live rollback stands) and the status says RollbackNotCommitted. A plan
// whose target a person moved since the rollback was decided is left
// alone: their commit is the newer decision, and the rollback stays
// recorded in the status; a change to anything else of the plan (a flag, a
// move of the file) gets the rollback on top.
func (d *Daemon) commitRollbacks(ctx context.Context) {
	d.mu.Lock()
	if !d.scanned && d.synced {
		d.scanned = true
		d.mu.Unlock()
		d.scanRollbacks(ctx)
		d.mu.Lock()
	}
	names := make([]string, 0, len(d.rollbacks))
	for name := range d.rollbacks {
		names = append(names, name)
	}
	d.mu.Unlock()
	slices.Sort(names)
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		d.commitRollback(ctx, name)
	}
}

// scanRollbacks queues the rollbacks whose commit a restart lost: plans
// whose record rolled back under the plan's current version to below its
// file's target. The commit message is rebuilt from the history.
func (d *Daemon) scanRollbacks(ctx context.Context) {
	for _, ds := range d.snapshot() {
		name := ds.Plan.Metadata.Name
		d.mu.Lock()
		_, queued := d.rollbacks[name]
		d.mu.Unlock()
		if queued {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil || rec.Status != reconcile.StatusRolledBack || rec.Commit != ds.Commit || committed(ds, rec.Position) {
			continue
		}
		events, err := d.Store.History(ctx, name, 50)
		if err != nil {
			continue
		}
		var steps []rollbackStep
		for i := len(events) - 1; i >= 0; i-- {
			e := events[i]
			if e.Kind != string(reconcile.Rollback) {
				if e.Kind == string(reconcile.Advance) || e.Kind == string(reconcile.MoveBack) {
					break
				}
				continue
			}
			var f reconcile.Failure
			_ = json.Unmarshal(e.Data, &f)
			steps = append([]rollbackStep{{from: e.From, to: e.To, failure: &f}}, steps...)
		}
		if len(steps) == 0 {
			steps = []rollbackStep{{from: ds.Target, to: rec.Position}}
		}
		d.mu.Lock()
		d.rollbacks[name] = pendingRollback{steps: steps, base: ds.Target}
		d.mu.Unlock()
		d.log().Info("a rollback's commit was not made before the restart; committing it now", "plan", name, "position", rec.Position.String())
	}
}

// commitRollback commits the rollback owed for the plan named name, if one
// still is.
func (d *Daemon) commitRollback(ctx context.Context, name string) {
	drop := func(msg string, args ...any) {
		d.mu.Lock()
		delete(d.rollbacks, name)
		d.mu.Unlock()
		if msg != "" {
			d.log().Info(msg, append([]any{"plan", name}, args...)...)
		}
	}
	var ds *reconcile.Desired
	for _, x := range d.snapshot() {
		if x.Plan.Metadata.Name == name {
			ds = x
		}
	}
	if ds == nil {
		drop("the plan is gone; its rollback is not committed")
		return
	}
	rec, err := d.Store.Load(ctx, name)
	if err != nil {
		d.log().Error("load the record of a rollback to commit", "plan", name, "err", err)
		return
	}
	d.mu.Lock()
	pr := d.rollbacks[name]
	file := ds.Plan.File
	v := d.versions[file]
	d.mu.Unlock()
	last := pr.steps[len(pr.steps)-1].to
	switch {
	case committed(ds, rec.Position):
		drop("") // committed already
		return
	case ds.Target != pr.base:
		drop("a commit moved the plan's target after its rollback was decided; the plan file keeps that target",
			"rollback", last.String(), "target", ds.Target.String(), "commit", shorthash.Of(ds.Commit))
		return
	case rec.Position != last || rec.Pending != nil:
		drop("the migration moved on since its rollback; the rollback is not committed", "rollback", last.String(),
			"position", rec.Position.String())
		return
	}
	var moved bool
	var pushed []byte
	cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
	_, err = d.Git.Commit(cctx, d.rollbackCommit(ds, rec.Position, pr, file, v, &moved, &pushed))
	cancel()
	switch {
	case err != nil:
		pr.tries++
		pr.err = err
		d.mu.Lock()
		d.rollbacks[name] = pr
		d.mu.Unlock()
		d.log().Error("rollback not committed", "plan", name, "try", pr.tries, "err", err)
	case moved:
		// Someone moved the target after the last sync: read it first.
		d.log().Info("the plan's target changed since the last sync; syncing before committing its rollback", "plan", name)
		signal(d.wakeSync)
	default:
		d.mu.Lock()
		if v := d.versions[file]; v != nil && pushed != nil {
			// The file's content now, and the daemon's own: not a
			// person's change, while a person's later commit that puts
			// the old content back (a revert of the rollback) is one.
			sum := digest(pushed)
			v.cur, v.own[sum] = sum, true
		}
		delete(d.rollbacks, name)
		d.mu.Unlock()
		signal(d.wakeSync)
	}
}

// committed reports whether the target of ds's plan file is the one a
// rollback to pos writes: start is written as the first phase, which the
// recorded failure keeps from being entered again.
func committed(ds *reconcile.Desired, pos plan.Position) bool {
	return ds.Target == ds.Plan.Resolve(ds.Plan.TargetFor(pos))
}

// rollbackCommit rewrites spec.target of file, the plan's file, to the
// position to, keeping every other byte, with a message that says why.
// When the file at the branch tip has a target other than pr.base and is
// not a content of the plan's version v (the daemon's own earlier
// rollbacks are), a person moved the target: it changes nothing and sets
// *moved. Otherwise *pushed is the content written.
func (d *Daemon) rollbackCommit(ds *reconcile.Desired, to plan.Position, pr pendingRollback, file string, v *version, moved *bool, pushed *[]byte) gitops.CommitRequest {
	p, steps := ds.Plan, pr.steps
	target := p.TargetFor(to)
	from := ds.Target
	if len(steps) > 0 {
		from = steps[0].from
	}
	var why []string
	for _, s := range steps {
		switch f := s.failure; {
		case f != nil && f.Guardrail != "" && f.Compare != nil:
			why = append(why, fmt.Sprintf("Guardrail %s read %s, past its bound (%s), at %s.", f.Guardrail, f.Compare, f.Bound, s.from))
		case f != nil && f.Guardrail != "":
			why = append(why, fmt.Sprintf("Guardrail %s was %s, over its bound %s, at %s.", f.Guardrail, reconcile.FormatValue(f.Value), f.Bound, s.from))
		case f != nil && f.What != "":
			why = append(why, strings.ToUpper(f.What[:1])+f.What[1:]+" at "+s.from.String()+".")
		}
	}
	msg := fmt.Sprintf("rollback(%s): %s → %s\n\n%s\nhal9-migrate rolled the migration back to %s and sets spec.target to match, so that\nGit says where the migration is. A newer commit is needed to advance again.",
		p.Metadata.Name, from, to, strings.Join(why, "\n"), to)
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
			gitops.TrailerPlan:   p.Metadata.Name,
			gitops.TrailerAction: "rollback",
			gitops.TrailerFrom:   from.String(),
			gitops.TrailerTo:     to.String(),
		},
		Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
			*moved, *pushed = false, nil
			data, err := read(file)
			if err != nil {
				return nil, err // it names the file
			}
			if !v.known(digest(data)) {
				cur, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: data})
				if err != nil {
					return nil, fmt.Errorf("%s is invalid at the branch head: %w", file, err)
				}
				if cur.TargetPosition() != pr.base {
					*moved = true
					return nil, nil
				}
			}
			edited, err := plan.ApplyEdits(file, data, plan.SetTarget(target))
			if err != nil {
				return nil, err
			}
			if _, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: edited}); err != nil {
				return nil, fmt.Errorf("the rollback would leave %s invalid: %w", file, err)
			}
			*pushed = edited
			return map[string][]byte{file: edited}, nil
		},
	}
}

// oneShot are the annotations commands leave for the daemon to act on once:
// a forced rollback past a point of no return, a checkpoint to restore.
var oneShot = []string{plan.ForceRollbackAnnotation, plan.RestoreCheckpointAnnotation}

// commitAcks removes the one-shot annotations of every plan whose
// migration has carried them out (it stands at the target they came with,
// nothing pending), in a commit of the daemon's own, so that they apply to
// nothing later and `plan diff` does not read them again.
func (d *Daemon) commitAcks(ctx context.Context) {
	for _, ds := range d.snapshot() {
		if ctx.Err() != nil {
			return
		}
		var keys []string
		for _, k := range oneShot {
			if _, ok := ds.Plan.Metadata.Annotations[k]; ok {
				keys = append(keys, k)
			}
		}
		name := ds.Plan.Metadata.Name
		d.mu.Lock()
		_, owed := d.rollbacks[name]
		v := d.versions[ds.Plan.File]
		d.mu.Unlock()
		if len(keys) == 0 || owed || v == nil {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil || rec.Pending != nil || rec.Position != ds.Target {
			continue
		}
		file := ds.Plan.File
		var pushed []byte
		edits := make([]plan.FileEdit, len(keys))
		for i, k := range keys {
			edits[i] = plan.RemoveAnnotation(k)
		}
		msg := fmt.Sprintf("ack(%s): %s carried out at %s\n\nhal9-migrate removes the one-shot annotation that asked for it, so that it applies to\nnothing later.",
			name, strings.Join(keys, " and "), rec.Position)
		if d.SkipCI {
			msg = "[skip ci] " + msg
		}
		cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
		_, err = d.Git.Commit(cctx, gitops.CommitRequest{
			Message:  msg,
			Author:   d.Author,
			Trailers: map[string]string{gitops.TrailerPlan: name, gitops.TrailerAction: "ack"},
			Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
				pushed = nil
				data, err := read(file)
				if err != nil {
					return nil, err
				}
				if !v.known(digest(data)) {
					return nil, nil // a person's change not synced yet: after the next sync
				}
				out, err := plan.ApplyEdits(file, data, edits...)
				if err != nil {
					return nil, err
				}
				if _, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: out}); err != nil {
					return nil, fmt.Errorf("removing the annotations would leave %s invalid: %w", file, err)
				}
				pushed = out
				return map[string][]byte{file: out}, nil
			},
		})
		cancel()
		if err != nil {
			d.log().Error("the one-shot annotations are not removed", "plan", name, "err", err)
			continue
		}
		if pushed != nil {
			d.mu.Lock()
			sum := digest(pushed)
			v.cur, v.own[sum] = sum, true
			d.mu.Unlock()
			signal(d.wakeSync)
		}
	}
}

// urgentStates are the states whose status goes to Git at once, however
// recently the plan's status was committed: a breach and what it did, and
// the migration at rest at its target. The steps in between are progress.
var urgentStates = map[string]bool{
	reconcile.StatusRolledBack: true, reconcile.StatusFrozen: true, reconcile.StatusBreached: true,
	reconcile.StatusHolding: true, reconcile.StatusCompleted: true,
}

// commitStatus commits, in one commit, the status files that changed since
// last written: at once when the state became one of urgentStates (a
// rollback, a freeze, a held breach, the target reached), when the
// conditions changed, or for a plan new to the daemon; otherwise (the
// progress of a migration) at most once per StatusInterval per plan, so
// that people can still push to the branch. all commits every change at
// once.
func (d *Daemon) commitStatus(ctx context.Context, all bool) error {
	changes := map[string][]byte{}
	written := map[string]writtenStatus{}
	var summary []string
	now := d.Clock.Now()
	for _, ds := range d.snapshot() {
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
		last, seen := d.written[name]
		d.mu.Unlock()
		types := make([]string, 0, len(st.Status.Conditions))
		for _, c := range st.Status.Conditions {
			types = append(types, c.Type)
		}
		if d.Metrics != nil {
			d.Metrics.SetConditions(name, types)
		}
		w := writtenStatus{key: st.Key(), at: now, state: st.Status.State, conds: strings.Join(types, ",")}
		if seen && last.key == w.key {
			continue
		}
		urgent := !seen || w.conds != last.conds || w.state != last.state && urgentStates[w.state]
		if !all && !urgent && now.Sub(last.at) < d.StatusInterval {
			continue // progress: it goes with a later commit
		}
		body, err := st.Marshal()
		if err != nil {
			return err
		}
		w.sum = digest(body)
		changes[d.StatusDir+"/"+name+".yaml"] = body
		written[name] = w
		at := rec.Position.String()
		if rec.Pending != nil {
			at += " → " + rec.Pending.String()
		}
		summary = append(summary, statusSummary(name, st, at, history))
	}
	if len(changes) == 0 {
		return nil
	}
	msg := "status: " + strings.Join(summary, "; ")
	if d.SkipCI {
		msg = "[skip ci] " + msg
	}
	cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
	defer cancel()
	_, err := d.statusGit().Commit(cctx, gitops.CommitRequest{
		Message:  msg,
		Author:   d.Author,
		Trailers: map[string]string{gitops.TrailerAction: "status"},
		Changes: func(func(string) ([]byte, error)) (map[string][]byte, error) {
			return changes, nil
		},
	})
	if err != nil {
		return fmt.Errorf("commit status: %w", err)
	}
	d.mu.Lock()
	for n, w := range written {
		d.written[n] = w
	}
	d.mu.Unlock()
	return nil
}

// statusGit is where the status files go: their own branch, or the
// tracked one.
func (d *Daemon) statusGit() Git {
	if d.StatusGit != nil {
		return d.StatusGit
	}
	return d.Git
}

// statusSummary is a plan's part of a status commit's subject: its state,
// its position and the last thing that happened to it, so that two commits
// in a row never read the same while their contents differ (an advance and
// the position entered are both "Progressing at canary 40%"). history is
// oldest first, Entered events included; at is the position, with the one
// a move under way goes to.
func statusSummary(name string, st Status, at string, history []store.Event) string {
	s := name + " " + st.Status.State + " at " + at
	if st.Status.State == "" { // nothing done yet
		s = name + " at " + at
	}
	if len(history) > 0 {
		s += " (" + history[len(history)-1].Kind + ")"
	}
	return s
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
	// The commit of the person that last changed the plan, never one of
	// the daemon's own: naming those would change the status, which would
	// be committed, which would change the head.
	s.Commit = ds.Commit
	s.Decommissioned = rec.Decommissioned
	if f, ok := d.invalid[ds.Plan.File]; ok {
		s.Conditions = append(s.Conditions, Condition{Type: "PlanInvalid", Commit: string(f.commit),
			Message: "the plan is invalid at " + shorthash.Of(string(f.commit)) + "; following its last good version: " + f.errs.Error()})
	}
	if c, ok := d.unsigned[ds.Plan.File]; ok {
		s.Conditions = append(s.Conditions, c)
	}
	if rb, ok := d.rollbacks[ds.Plan.Metadata.Name]; ok && rb.err != nil {
		s.Conditions = append(s.Conditions, Condition{Type: "RollbackNotCommitted",
			Message: fmt.Sprintf("rolled back to %s, but the commit could not be pushed after %d tries: %v", rec.Position, rb.tries, rb.err)})
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

// fileOf returns the file that holds the plan named name at the head last
// synced.
func (d *Daemon) fileOf(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var files []string
	for f, p := range d.byFile {
		if p.plan.Metadata.Name == name {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return "", false
	}
	return slices.Min(files), true // the one desired follows
}
