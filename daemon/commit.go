package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"

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
	// group is the lockstep group the plan moves in: its members'
	// rollbacks are committed together.
	group string
	// held is when the commit was first held for a member of the group
	// finishing a move a restart interrupted (see commitRollback).
	held time.Time
}

// rollbackStep is one automatic rollback, as its commit message tells it.
type rollbackStep struct {
	from, to plan.Position
	failure  *reconcile.Failure
}

// writtenStatus is what the daemon last committed of a plan's status.
type writtenStatus struct {
	sum   string // of the file's content
	at    time.Time
	state string
	conds string
}

// onRollback queues the commit of a rollback, and has a freeze's status
// committed at once: the live rollback has been applied and recorded
// already. It runs on the safety loop and never blocks on Git.
func (d *Daemon) onRollback(_ context.Context, desired *reconcile.Desired, a reconcile.Action) {
	d.queueRollbacks([]*reconcile.Desired{desired}, []reconcile.Action{a})
	signal(d.wakeCommit)
}

// onGroupRollback queues the rollbacks of the members of a group that
// rolled back in one step, together, so that one commit moves them all.
func (d *Daemon) onGroupRollback(_ context.Context, _ string, ds []*reconcile.Desired, as []reconcile.Action) {
	d.queueRollbacks(ds, as)
	signal(d.wakeCommit)
}

func (d *Daemon) queueRollbacks(ds []*reconcile.Desired, as []reconcile.Action) {
	type queued struct {
		name string
		step rollbackStep
		ds   *reconcile.Desired
	}
	var qs []queued
	for i, desired := range ds {
		a := as[i]
		if a.Kind != reconcile.Rollback {
			continue
		}
		name := desired.Plan.Metadata.Name
		from := plan.Position{}
		// The record names the position that failed; the runner saved it
		// before calling.
		if rec, err := d.Store.Load(context.Background(), name); err == nil && len(rec.Failed) > 0 {
			from = rec.Failed[len(rec.Failed)-1].Position
		}
		qs = append(qs, queued{name, rollbackStep{from: from, to: a.To, failure: a.Failure}, desired})
	}
	d.mu.Lock()
	for _, q := range qs {
		pr, ok := d.rollbacks[q.name]
		if !ok {
			pr.base = q.ds.Target
		}
		pr.group = q.ds.Plan.Spec.Group
		pr.steps = append(pr.steps, q.step)
		d.rollbacks[q.name] = pr
	}
	d.mu.Unlock()
	if d.Metrics != nil {
		for _, q := range qs {
			d.Metrics.RolledBack(q.name)
		}
	}
}

// commitRollbacks commits, for every plan whose migration an automatic
// rollback left below the target its file names, the rollback's target, so
// that Git names the live position. A rollback whose commit a restart lost
// is found again from the records. A push that fails leaves it owed (the
// live rollback stands) and the status says RollbackNotCommitted. A plan
// whose target a person moved since the rollback was decided is left
// alone: their commit is the newer decision, and the rollback stays
// recorded in the status; a change to anything else of the plan (a flag, a
// move of the file) gets the rollback on top. The members of a lockstep
// group that rolled back together go in one commit.
func (d *Daemon) commitRollbacks(ctx context.Context) {
	d.mu.Lock()
	if !d.scanned && d.synced {
		d.scanned = true
		d.mu.Unlock()
		again := d.scanRollbacks(ctx)
		d.mu.Lock()
		if again {
			// A move the restart interrupted is being finished: it may be
			// a rollback, whose commit is owed once it is done.
			d.scanned = false
		}
	}
	units := map[string][]string{}
	for name, pr := range d.rollbacks {
		key := "plan/" + name
		if pr.group != "" {
			key = "group/" + pr.group
		}
		units[key] = append(units[key], name)
	}
	d.mu.Unlock()
	for _, key := range slices.Sorted(maps.Keys(units)) {
		if ctx.Err() != nil {
			return
		}
		names := units[key]
		slices.Sort(names)
		d.commitRollback(ctx, strings.TrimPrefix(key, "group/"), names)
	}
}

// scanRollbacks queues the rollbacks whose commit a restart lost: plans
// whose record rolled back under the plan's current version to below its
// file's target. The commit message is rebuilt from the history. It
// reports whether a record had a move under way (a restart interrupted it
// and the safety loop finishes it), so that the scan is made again: a
// rollback finished after the restart is owed a commit too, and the
// runner does not hand a finished move over as a rollback.
func (d *Daemon) scanRollbacks(ctx context.Context) (again bool) {
	// Another replica's plans: it commits their rollbacks.
	for _, ds := range d.owned(d.snapshot()) {
		name := ds.Plan.Metadata.Name
		d.mu.Lock()
		_, queued := d.rollbacks[name]
		d.mu.Unlock()
		if queued {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err == nil && rec.Pending != nil {
			again = true
			continue
		}
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
		d.rollbacks[name] = pendingRollback{steps: steps, base: ds.Target, group: ds.Plan.Spec.Group}
		d.mu.Unlock()
		d.log().Info("a rollback's commit was not made before the restart; committing it now", "plan", name, "position", rec.Position.String())
	}
	return again
}

// groupHold is how long the commit of a group's rollbacks waits for a
// member that is finishing a move a restart interrupted, so that one
// commit moves every member that rolled back.
const groupHold = time.Minute

// owed is one plan's rollback about to be committed.
type owed struct {
	name   string
	ds     *reconcile.Desired
	pr     pendingRollback
	from   plan.Position // where its chain of rollbacks began
	to     plan.Position
	file   string
	v      *version
	pushed []byte
}

// commitRollback commits the rollbacks owed for the plans named, the
// members of group (or one plan, group then being "plan/NAME"), in one
// commit: those that still are owed.
func (d *Daemon) commitRollback(ctx context.Context, group string, names []string) {
	drop := func(name, msg string, args ...any) {
		d.mu.Lock()
		delete(d.rollbacks, name)
		d.mu.Unlock()
		if msg != "" {
			d.log().Info(msg, append([]any{"plan", name}, args...)...)
		}
	}
	snap := d.snapshot()
	var items []*owed
	for _, name := range names {
		var ds *reconcile.Desired
		for _, x := range snap {
			if x.Plan.Metadata.Name == name {
				ds = x
			}
		}
		if ds == nil {
			drop(name, "the plan is gone; its rollback is not committed")
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil {
			d.log().Error("load the record of a rollback to commit", "plan", name, "err", err)
			return // all of the group's moves go together, or none
		}
		d.mu.Lock()
		pr := d.rollbacks[name]
		file := ds.Plan.File
		v := d.versions[file]
		d.mu.Unlock()
		last := pr.steps[len(pr.steps)-1].to
		switch {
		case committed(ds, rec.Position):
			drop(name, "") // committed already
			continue
		case ds.Target != pr.base:
			drop(name, "a commit moved the plan's target after its rollback was decided; the plan file keeps that target",
				"rollback", last.String(), "target", ds.Target.String(), "commit", shorthash.Of(ds.Commit))
			continue
		case rec.Position != last || rec.Pending != nil:
			drop(name, "the migration moved on since its rollback; the rollback is not committed", "rollback", last.String(),
				"position", rec.Position.String())
			continue
		}
		items = append(items, &owed{name: name, ds: ds, pr: pr, to: rec.Position, file: file, v: v})
	}
	if len(items) == 0 {
		return
	}
	if g := items[0].pr.group; g != "" {
		// A member of the group finishing a move the restart interrupted
		// (a rollback, maybe, killed between the members') goes in the
		// same commit: wait for it, for a while.
		var finishing []string
		for _, x := range snap {
			n := x.Plan.Metadata.Name
			if x.Plan.Spec.Group != g || slices.Contains(names, n) {
				continue
			}
			if rec, err := d.Store.Load(ctx, n); err == nil && rec.Pending != nil {
				finishing = append(finishing, n)
			}
		}
		if len(finishing) > 0 {
			d.mu.Lock()
			pr := d.rollbacks[items[0].name]
			if pr.held.IsZero() {
				pr.held = d.Clock.Now()
				d.rollbacks[items[0].name] = pr
			}
			wait := d.Clock.Now().Sub(pr.held) < groupHold
			d.mu.Unlock()
			if wait {
				d.log().Info("holding the group's rollback commit for members finishing an interrupted move", "group", g,
					"plans", strings.Join(names, ","), "finishing", strings.Join(finishing, ","))
				return
			}
		}
	}
	var moved bool
	ctx, span := d.startSpan(ctx, "git.commit", attribute.String("commit.kind", "rollback"), attribute.String("plans", strings.Join(names, ",")))
	defer span.End()
	cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
	_, err := d.Git.Commit(cctx, d.rollbackCommit(group, items, &moved))
	cancel()
	spanError(span, err)
	switch {
	case err != nil:
		d.mu.Lock()
		for _, it := range items {
			pr := d.rollbacks[it.name]
			pr.tries++
			pr.err = err
			d.rollbacks[it.name] = pr
		}
		d.mu.Unlock()
		d.log().ErrorContext(ctx, "rollback not committed", "plans", strings.Join(names, ","), "try", items[0].pr.tries+1, "err", err)
	case moved:
		// Someone moved the target after the last sync: read it first.
		d.log().Info("the plan's target changed since the last sync; syncing before committing its rollback", "plans", strings.Join(names, ","))
		signal(d.wakeSync)
	default:
		d.mu.Lock()
		for _, it := range items {
			if v := d.versions[it.file]; v != nil && it.pushed != nil {
				// The file's content now, and the daemon's own: not a
				// person's change, while a person's later commit that puts
				// the old content back (a revert of the rollback) is one.
				sum := digest(it.pushed)
				v.cur, v.own[sum] = sum, true
			}
			delete(d.rollbacks, it.name)
		}
		d.mu.Unlock()
		signal(d.wakeSync)
	}
}

// statusHold bounds how long a plan's status waits for the commit of its
// rollback (rollbackAhead): longer than a group's rollback commit is held
// for a member finishing a move.
const statusHold = groupHold + time.Minute

// rollbackAhead says whether the status b of ds waits for its rollback's
// commit: the migration rolls or rolled back below the target its plan
// file names under the same commit, and the commit that lowers the target
// has been neither made nor tried. A group's members are rolled back in
// turn and handed over together once the last is done, so without the
// wait the first member's status could reach Git before the rollback that
// explains it: a plan file at canary 50% beside a status at start. A
// failed try ends the wait (the status then says RollbackNotCommitted),
// as does statusHold after the failure the rollback was decided on.
func (d *Daemon) rollbackAhead(ds *reconcile.Desired, b *statusBuilt, now time.Time) bool {
	if !b.rolledBack || b.commit != ds.Commit || committed(ds, b.position) || now.Sub(b.failedAt) >= statusHold {
		return false
	}
	d.mu.Lock()
	pr, queued := d.rollbacks[ds.Plan.Metadata.Name]
	d.mu.Unlock()
	return !queued || pr.tries == 0
}

// committed reports whether the target of ds's plan file is the one a
// rollback to pos writes: start is written as the first phase, which the
// recorded failure keeps from being entered again.
func committed(ds *reconcile.Desired, pos plan.Position) bool {
	return ds.Target == ds.Plan.Resolve(ds.Plan.TargetFor(pos))
}

// rollbackCommit rewrites spec.target of each item's plan file to the
// position it rolled back to, keeping every other byte, with a message
// that says why: one commit for the members of a group. When a file at the
// branch tip has a target other than the item's base and is not a content
// of the plan's version (the daemon's own earlier rollbacks are), a person
// moved the target: it changes nothing and sets *moved. Otherwise each
// item's pushed is the content written.
func (d *Daemon) rollbackCommit(group string, items []*owed, moved *bool) gitops.CommitRequest {
	var subject, why []string
	var plans []string
	for _, it := range items {
		p, steps := it.ds.Plan, it.pr.steps
		from := it.ds.Target
		if len(steps) > 0 {
			from = steps[0].from
		}
		it.from = from
		plans = append(plans, p.Metadata.Name)
		subject = append(subject, fmt.Sprintf("%s → %s", from, it.to))
		if len(items) > 1 {
			subject[len(subject)-1] = p.Metadata.Name + " " + subject[len(subject)-1]
		}
		for _, s := range steps {
			who := ""
			if len(items) > 1 {
				who = p.Metadata.Name + ": "
			}
			switch f := s.failure; {
			case f != nil && f.Member != "" && f.Member != p.Metadata.Name:
				why = append(why, fmt.Sprintf("%sfollowed member %s of group %s back from %s to %s.", who, f.Member, group, s.from, s.to))
			case f != nil && f.Guardrail != "" && f.Compare != nil:
				why = append(why, fmt.Sprintf("%sGuardrail %s read %s, past its bound (%s), at %s.", who, f.Guardrail, f.Compare, f.Bound, s.from))
			case f != nil && f.Guardrail != "":
				why = append(why, fmt.Sprintf("%sGuardrail %s was %s, over its bound %s, at %s.", who, f.Guardrail, reconcile.FormatValue(f.Value), f.Bound, s.from))
			case f != nil && f.What != "":
				why = append(why, who+strings.ToUpper(f.What[:1])+f.What[1:]+" at "+s.from.String()+".")
			}
		}
	}
	first := items[0]
	var msg string
	if len(items) == 1 {
		msg = fmt.Sprintf("rollback(%s): %s\n\n%s\nhal9-migrate rolled the migration back to %s and sets spec.target to match, so that\nGit says where the migration is. A newer commit is needed to advance again.",
			first.name, subject[0], strings.Join(why, "\n"), first.to)
	} else {
		msg = fmt.Sprintf("rollback(group %s): %s\n\n%s\nThe members of group %s move as one: hal9-migrate rolled every member back and sets\neach spec.target to match, in this one commit, so that Git says where the migration\nis. A newer commit is needed to advance again.",
			group, strings.Join(subject, ", "), strings.Join(why, "\n"), group)
	}
	for _, it := range items {
		if it.to.IsStart() {
			msg += "\nAt start the candidate takes no traffic; the target is the first phase, which the\nrecorded failure keeps from being entered again under this commit."
			break
		}
	}
	if d.SkipCI {
		msg = "[skip ci] " + msg
	}
	trailers := map[string]string{
		gitops.TrailerPlan:   strings.Join(plans, ", "),
		gitops.TrailerAction: "rollback",
	}
	if len(items) == 1 {
		trailers[gitops.TrailerFrom] = first.from.String()
		trailers[gitops.TrailerTo] = first.to.String()
	} else {
		trailers[gitops.TrailerGroup] = group
	}
	return gitops.CommitRequest{
		Message:  msg,
		Author:   d.Author,
		Trailers: trailers,
		Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
			*moved = false
			out := map[string][]byte{}
			for _, it := range items {
				it.pushed = nil
			}
			for _, it := range items {
				data, err := read(it.file)
				if err != nil {
					return nil, err // it names the file
				}
				if !it.v.known(digest(data)) {
					cur, err := d.Validator.ValidateOne(plan.Source{Path: it.file, Data: data})
					if err != nil {
						return nil, fmt.Errorf("%s is invalid at the branch head: %w", it.file, err)
					}
					if cur.TargetPosition() != it.pr.base {
						*moved = true
						return nil, nil
					}
				}
				edited, err := plan.ApplyEdits(it.file, data, plan.SetTarget(it.ds.Plan.TargetFor(it.to)))
				if err != nil {
					return nil, err
				}
				if _, err := d.Validator.ValidateOne(plan.Source{Path: it.file, Data: edited}); err != nil {
					return nil, fmt.Errorf("the rollback would leave %s invalid: %w", it.file, err)
				}
				out[it.file] = edited
			}
			for _, it := range items {
				it.pushed = out[it.file]
			}
			return out, nil
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
	for _, ds := range d.owned(d.snapshot()) {
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
		sctx, span := d.startSpan(ctx, "git.commit", attribute.String("commit.kind", "ack"), attribute.String("plans", name))
		cctx, cancel := context.WithTimeout(sctx, d.CommitTimeout)
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
		spanError(span, err)
		span.End()
		if err != nil {
			d.log().ErrorContext(sctx, "the one-shot annotations are not removed", "plan", name, "err", err)
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
// progress of a migration) at most once per StatusInterval per plan, and
// with no commit of its own more often than once per StatusInterval, so
// that people can still push to the branch: progress rides along with
// the next commit made for an urgent change, or waits for the interval.
// all commits every change at once.
//
// Over thousands of plans its cost follows what changed: a plan's status
// is built again (its record and history read, its file written out) only
// when its record's version or what else the status says of it moved
// (statusInputsLocked), and the commit message names a bounded number of
// plans.
func (d *Daemon) commitStatus(ctx context.Context, all bool) error {
	versions, err := d.recordVersions(ctx)
	if err != nil {
		return err
	}
	now := d.Clock.Now()
	type item struct {
		name   string
		b      *statusBuilt
		urgent bool
		plan   *plan.Plan
	}
	var items []item
	urgent := false
	// A plan another replica steps has its status written by it: this
	// one's view of it would be stale.
	snap := d.owned(d.snapshot())
	d.mu.Lock()
	d.fleet.forgetStatus(snap)
	lastCommit := d.fleet.statusAt
	d.mu.Unlock()
	for _, ds := range snap {
		name := ds.Plan.Metadata.Name
		d.mu.Lock()
		inputs := d.statusInputsLocked(ds)
		b, ok := d.fleet.built[name]
		last, seen := d.written[name]
		d.mu.Unlock()
		if !ok || versions == nil || b.version != versions[name] || b.inputs != inputs ||
			b.body == nil && (!seen || last.sum != b.sum) {
			if b, err = d.buildStatus(ctx, ds, inputs); err != nil {
				return err
			}
		}
		if seen && last.sum == b.sum {
			continue
		}
		if !all && d.rollbackAhead(ds, b, now) {
			continue // it goes after its rollback's commit
		}
		u := !seen || b.conds != last.conds || b.state != last.state && urgentStates[b.state]
		if !all && !u && now.Sub(last.at) < d.StatusInterval {
			continue // progress: it goes with a later commit
		}
		urgent = urgent || u
		items = append(items, item{name, b, u, ds.Plan})
	}
	if !all && !urgent && !lastCommit.IsZero() && now.Sub(lastCommit) < d.StatusInterval {
		return nil // progress alone: not more than one commit per interval
	}
	if len(items) == 0 {
		return nil
	}
	changes := make(map[string][]byte, len(items))
	written := make(map[string]writtenStatus, len(items))
	owners := make(map[string]*plan.Plan, len(items)) // of each file changed
	lines := make([]statusLine, 0, len(items))
	for _, it := range items {
		changes[d.StatusDir+"/"+it.name+".yaml"] = it.b.body
		owners[d.StatusDir+"/"+it.name+".yaml"] = it.plan
		written[it.name] = writtenStatus{sum: it.b.sum, at: now, state: it.b.state, conds: it.b.conds}
		lines = append(lines, statusLine{text: it.b.summary, state: it.b.state, urgent: it.urgent})
	}
	msg := statusMessage(lines)
	if d.SkipCI {
		msg = "[skip ci] " + msg
	}
	ctx, span := d.startSpan(ctx, "git.commit", attribute.String("commit.kind", "status"), attribute.Int("plans", len(written)))
	defer span.End()
	cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
	defer cancel()
	_, err = d.statusGit().Commit(cctx, gitops.CommitRequest{
		Message:  msg,
		Author:   d.Author,
		Trailers: map[string]string{gitops.TrailerAction: "status"},
		Changes: func(func(string) ([]byte, error)) (map[string][]byte, error) {
			// Each try, as late as can be: a shard given up since the
			// status was read is another replica's to write.
			out := make(map[string][]byte, len(changes))
			for f, body := range changes {
				if d.owns(owners[f]) {
					out[f] = body
				}
			}
			return out, nil
		},
	})
	if err != nil {
		spanError(span, err)
		return fmt.Errorf("commit status: %w", err)
	}
	d.mu.Lock()
	for n, w := range written {
		d.written[n] = w
		if b, ok := d.fleet.built[n]; ok && b.sum == w.sum {
			b.body = nil // written: only its sum is compared from now on
		}
	}
	d.fleet.statusAt = now
	d.mu.Unlock()
	return nil
}

// recordVersions returns the version of every plan's record when the store
// can tell them in one read (store.SQL can), or nil: then every status is
// built again each time.
func (d *Daemon) recordVersions(ctx context.Context) (map[string]int64, error) {
	rv, ok := d.Store.(RecordVersions)
	if !ok {
		return nil, nil
	}
	return rv.Versions(ctx)
}

// RecordVersions is a store that tells the version of every record in one
// read (store.SQL has it).
type RecordVersions interface {
	Versions(ctx context.Context) (map[string]int64, error)
}

// buildStatus reads a plan's record and history and builds its status
// file, as commitStatus compares and commits it, keeping it for the next
// time; the conditions it finds are notified and reported.
func (d *Daemon) buildStatus(ctx context.Context, ds *reconcile.Desired, inputs string) (*statusBuilt, error) {
	name := ds.Plan.Metadata.Name
	rec, err := d.Store.Load(ctx, name)
	if err != nil {
		return nil, err
	}
	history, err := d.Store.History(ctx, name, 10)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	st := d.statusOf(ds, rec, history)
	d.notifyConditionsLocked(ds, rec, st.Status.Conditions)
	d.mu.Unlock()
	types := make([]string, 0, len(st.Status.Conditions))
	for _, c := range st.Status.Conditions {
		types = append(types, c.Type)
	}
	if d.Metrics != nil {
		d.Metrics.SetConditions(name, types)
	}
	body, err := st.Marshal()
	if err != nil {
		return nil, err
	}
	at := rec.Position.String()
	if rec.Pending != nil {
		at += " → " + rec.Pending.String()
	}
	b := &statusBuilt{version: rec.Version, inputs: inputs, body: body, sum: digest(body), state: st.Status.State,
		conds: strings.Join(types, ","), summary: statusSummary(name, st, at, history),
		rolledBack: rec.Status == reconcile.StatusRolledBack, position: rec.Position, commit: rec.Commit}
	if rec.Pending != nil {
		b.position = *rec.Pending
	}
	if n := len(rec.Failed); n > 0 {
		// Every rollback records the failure it was decided on.
		b.failedAt = rec.Failed[n-1].At
	}
	d.mu.Lock()
	if d.fleet.built == nil {
		d.fleet.built = map[string]*statusBuilt{}
	}
	d.fleet.built[name] = b
	d.mu.Unlock()
	return b, nil
}

// statusGit is where the status files go: their own branch, or the
// tracked one.
func (d *Daemon) statusGit() Git {
	if d.StatusGit != nil {
		return d.StatusGit
	}
	return d.Git
}

// statusLines is how many plans a status commit's message names, one a
// line, beyond its subject: a commit carrying a fleet's transitions says
// how many more there are rather than naming them all.
const statusLines = 20

// statusLine is one plan's line in a status commit's message.
type statusLine struct {
	text   string
	state  string
	urgent bool
}

// statusMessage is a status commit's message. For up to three plans it is
// the subject alone, naming each ("status: shop Progressing at canary 10%
// (Advance); cart …"); for more, the subject counts the plans by state,
// and the body names statusLines of them, the urgent changes (a rollback,
// a freeze, the target reached) first, then "and K more".
func statusMessage(lines []statusLine) string {
	if len(lines) <= 3 {
		texts := make([]string, len(lines))
		for i, l := range lines {
			texts[i] = l.text
		}
		return "status: " + strings.Join(texts, "; ")
	}
	lines = slices.Clone(lines)
	slices.SortStableFunc(lines, func(a, b statusLine) int {
		switch {
		case a.urgent == b.urgent:
			return strings.Compare(a.text, b.text)
		case a.urgent:
			return -1
		}
		return 1
	})
	count := map[string]int{}
	for _, l := range lines {
		state := l.state
		if state == "" {
			state = "new"
		}
		count[state]++
	}
	var states []string
	for _, s := range slices.Sorted(maps.Keys(count)) {
		states = append(states, fmt.Sprintf("%d %s", count[s], s))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "status: %d plans (%s)\n\n", len(lines), strings.Join(states, ", "))
	for i, l := range lines {
		if i == statusLines {
			fmt.Fprintf(&b, "and %d more\n", len(lines)-statusLines)
			break
		}
		b.WriteString(l.text + "\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
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

// statusInputsLocked is what statusOf reads of ds and of the daemon,
// besides the record and the history: a status built from the same
// inputs and the same record version is the same. Keep the two together.
// It holds d.mu.
func (d *Daemon) statusInputsLocked(ds *reconcile.Desired) string {
	var b strings.Builder
	name := ds.Plan.Metadata.Name
	b.WriteString(ds.Plan.File + "\x00" + ds.Target.String() + "\x00" + ds.Commit + "\x00" + ds.Plan.Spec.Group)
	if v, ok := d.views[name]; ok {
		for _, g := range v.action.Gates {
			if !g.Open {
				b.WriteString("\x00gate:" + g.Reason)
			}
		}
	}
	if p, ok := d.proposals[name]; ok && p.at == ds.Target {
		fmt.Fprintf(&b, "\x00proposal:%v", p.cond)
	}
	if f, ok := d.invalid[ds.Plan.File]; ok {
		b.WriteString("\x00invalid:" + string(f.commit) + f.errs.Error())
	}
	if c, ok := d.unsigned[ds.Plan.File]; ok {
		fmt.Fprintf(&b, "\x00unsigned:%v", c)
	}
	if rb, ok := d.rollbacks[name]; ok && rb.err != nil {
		fmt.Fprintf(&b, "\x00rollback:%d:%v", rb.tries, rb.err)
	}
	return b.String()
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
	s.Group = ds.Plan.Spec.Group
	s.Reached = rec.Reached
	if v, ok := d.views[ds.Plan.Metadata.Name]; ok {
		for _, g := range v.action.Gates {
			if !g.Open {
				s.Waiting = append(s.Waiting, g.Reason)
			}
		}
	}
	if p, ok := d.proposals[ds.Plan.Metadata.Name]; ok && p.at == ds.Target {
		s.Conditions = append(s.Conditions, p.cond)
	}
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
