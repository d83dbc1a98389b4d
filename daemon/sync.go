package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// version is what the daemon knows of one plan file's content: the commit
// of a person that last changed it, the content it has now (its SHA-256
// sum), and the contents the daemon's own rollbacks wrote into it since,
// which are not a person's change. A position that failed is not entered
// again until a person changes the file: another plan's commit, a status
// commit, the daemon's own rollback or a restart does not count; a revert
// of that rollback does.
type version struct {
	commit gitops.Hash
	cur    string
	own    map[string]bool
}

// known reports whether content with sum is the version's: its current
// content, or one the daemon wrote.
func (v *version) known(sum string) bool { return v != nil && (v.cur == sum || v.own[sum]) }

// followed is the version of a plan file the safety loop follows: the plan,
// the bytes it was read from, and a target lowered over them by a commit
// that was not signed ("" when none).
type followed struct {
	plan   *plan.Plan
	data   []byte
	target string
	// blob is the Git blob id of data, when it was read from Git: a sync
	// leaves unread a file whose blob at the head is still this one.
	blob string
}

// invalidFile is a file broken at the head: its errors and the commit that
// broke it.
type invalidFile struct {
	errs   plan.Errors
	commit gitops.Hash
}

// digest is the SHA-256 of a file's content, as version sums are kept.
func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// gitLoop checks the branch at start, every Poll and at once on a webhook,
// and commits what the safety loop leaves to commit: rollbacks at once,
// status files as they fall due. Every call it makes has a deadline.
func (d *Daemon) gitLoop(ctx context.Context) {
	poll := d.Clock.NewTicker(d.Poll)
	defer poll.Stop()
	status := d.Clock.NewTicker(d.StatusInterval)
	defer status.Stop()
	d.syncNow(ctx)
	for {
		d.commitRollbacks(ctx)
		d.commitPromotions(ctx)
		d.commitAcks(ctx)
		if err := d.commitStatus(ctx, false); err != nil && ctx.Err() == nil {
			d.log().Error("commit status", "err", err)
		}
		d.reportCommitStatuses(ctx)
		d.retryPullRequests(ctx)
		select {
		case <-ctx.Done():
			return
		case <-d.wakeSync:
			d.syncNow(ctx)
		case <-poll.C():
			d.syncNow(ctx)
		case <-d.wakeCommit:
		case <-status.C():
		}
	}
}

// syncNow syncs within SyncTimeout and reports how it went.
func (d *Daemon) syncNow(ctx context.Context) {
	started := d.Clock.Now()
	ctx, span := d.startSpan(ctx, "git.sync")
	defer span.End()
	sctx, cancel := context.WithTimeout(ctx, d.SyncTimeout)
	err := d.sync(sctx)
	if err == nil {
		d.readPeers(sctx)
	}
	cancel()
	spanError(span, err)
	if d.Metrics != nil {
		d.Metrics.GitSynced(d.Clock.Now(), d.Clock.Since(started), err)
	}
	if err != nil && ctx.Err() == nil {
		// The safety loop goes on with the plans it has: Git being away
		// never stops a rollback.
		d.log().ErrorContext(ctx, "sync", "err", err)
	}
}

// sync reads the plans at the branch head when it moved, and hands the
// safety loop the new snapshot.
func (d *Daemon) sync(ctx context.Context) error {
	head, err := d.Git.Head(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	same := head == d.head
	if same {
		d.lastSync = d.Clock.Now()
	}
	d.mu.Unlock()
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("head", shorthash.Of(string(head))), attribute.Bool("moved", !same))
	if same {
		return nil
	}
	if d.RequireSigned {
		if err := d.resumeSignatureChecks(ctx); err != nil {
			return err
		}
	}
	fctx, fspan := d.startSpan(ctx, "git.fetch")
	snap, err := d.syncGit(fctx)
	spanError(fspan, err)
	fspan.End()
	if err != nil {
		return err
	}
	_, vspan := d.startSpan(ctx, "plans.validate", attribute.Int("files", len(snap.Files)))
	set := d.Validator.ValidateCached(d.fleet.parsed(), snap.Files)
	vspan.End()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync %s: %w", shorthash.Of(string(snap.Commit)), err)
	}

	if d.StatusGit != nil && !snap.Own {
		// The status files live on their own branch: read its head too,
		// for the status files read below. Failing, they are not read.
		if _, err := d.StatusGit.Sync(ctx); err != nil {
			d.log().WarnContext(ctx, "read the status branch", "err", err)
		}
	}

	d.mu.Lock()
	before := maps.Clone(d.byFile)
	human := d.human
	if !snap.Own || human == "" {
		// The newest commit that is not this daemon's: a person's push
		// its status commit was rebased onto is the person's, not the
		// status commit's.
		human = snap.Person
		if human == "" {
			human = snap.Commit
		}
	}
	heads := d.nextVersions(snap, human)
	d.fleet.settle()
	d.mu.Unlock()

	if err := d.carryRenamed(ctx, set.Plans, plansOf(before), snap.Commit); err != nil {
		return err
	}
	invalid := map[string]invalidFile{}
	for _, e := range set.Errors {
		f := invalid[e.File]
		f.errs = append(f.errs, e)
		f.commit = human
		if v, ok := heads[e.File]; ok {
			f.commit = v.commit
		}
		invalid[e.File] = f
	}

	// What to follow of each valid plan: the head's version, unless the
	// signature gate keeps an earlier one.
	files := make(map[string]plan.Source, len(snap.Files))
	for _, f := range snap.Files {
		files[f.Path] = f
	}
	follow := map[string]followed{}
	unsigned := map[string]Condition{}
	headFollowed := map[string]bool{}
	for _, p := range set.Plans {
		f := followed{plan: p, data: files[p.File].Data, blob: files[p.File].Blob}
		if d.RequireSigned && !snap.Signed {
			prev, ok := before[p.File]
			keep, cond := d.gate(f, prev, ok, snap, heads[p.File].commit)
			if cond != nil {
				unsigned[p.File] = *cond
				d.log().Warn("a change not signed by a trusted key is not followed", "plan", p.Metadata.Name,
					"commit", cond.Commit, "reason", cond.Message)
			}
			if keep == nil {
				continue
			}
			headFollowed[p.File] = keep.plan == p
			f = *keep
		} else {
			headFollowed[p.File] = true
		}
		follow[p.File] = f
	}

	d.mu.Lock()
	// A file whose head content is not followed (broken, or kept back for
	// want of a signature) keeps the version of what is followed: its
	// migration answers to the commit that made that version, and a
	// position that failed under it stays failed.
	versions := make(map[string]*version, len(heads))
	for file, v := range heads {
		if headFollowed[file] {
			versions[file] = v
		} else if old, ok := d.versions[file]; ok {
			versions[file] = old
		}
	}
	d.heads = heads
	d.synced = true
	d.head = snap.Commit
	d.human = human
	d.lastSync = d.Clock.Now()
	d.versions = versions
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
	d.readStatus(set.Plans, plansOf(before))
	if !snap.Own {
		d.checkStatusFiles()
	}
	// Each broken file is told once per commit that broke it, not at every
	// sync of the daemon's own commits on top.
	for file, f := range invalid {
		if old, ok := d.invalid[file]; ok && old.commit == f.commit {
			continue
		}
		args := []any{"file", file, "commit", f.commit, "errors", f.errs.Error()}
		if last, ok := d.byFile[file]; ok {
			d.log().Warn("plan file invalid; keeping its last good version", append(args, "plan", last.plan.Metadata.Name)...)
		} else {
			d.log().Warn("plan file invalid; not followed", args...)
		}
	}
	d.invalid = invalid
	d.unsigned = unsigned
	maps.Copy(d.byFile, follow)
	for _, p := range set.Plans {
		if _, ok := follow[p.File]; !ok {
			if f, ok := d.byFile[p.File]; ok && f.plan.Metadata.Name != p.Metadata.Name {
				// Not followed, and the file now holds another plan: the
				// old one is not this file's any more.
				delete(d.byFile, p.File)
			}
		}
	}
	d.rebuildLocked()
	kept := d.keptLocked()
	d.mu.Unlock()

	d.keep(ctx, kept)
	d.wakeEveryPlan()
	return nil
}

// nextVersions works out the version of each plan file's content at snap:
// a content seen before in the file's version keeps it, and so does any
// change made by the daemon's own commits alone; a file moved without a
// change keeps the version it had where it was; any other change is a
// person's, at human. It holds d.mu.
func (d *Daemon) nextVersions(snap gitops.Snapshot, human gitops.Hash) map[string]*version {
	out := make(map[string]*version, len(snap.Files))
	present := make(map[string]bool, len(snap.Files))
	for _, f := range snap.Files {
		present[f.Path] = true
	}
	moved := map[string]*version{} // the versions of files gone, by content
	for file, v := range d.heads {
		if !present[file] {
			moved[v.cur] = v
		}
	}
	for _, f := range snap.Files {
		sum := d.fleet.sum(f)
		old := d.heads[f.Path]
		if old == nil {
			old = moved[sum]
		}
		switch {
		case old != nil && old.cur == sum:
			out[f.Path] = old
		case old != nil && (snap.Own || old.own[sum]):
			out[f.Path] = &version{commit: old.commit, cur: sum, own: old.own}
		default:
			out[f.Path] = &version{commit: human, cur: sum, own: map[string]bool{}}
		}
	}
	return out
}

// plansOf returns the plans of what is followed, by file.
func plansOf(m map[string]followed) map[string]*plan.Plan {
	out := make(map[string]*plan.Plan, len(m))
	for file, f := range m {
		out[file] = f.plan
	}
	return out
}

// rebuildLocked builds the snapshot the safety loop works on from the plans
// followed. It holds d.mu.
func (d *Daemon) rebuildLocked() {
	files := slices.Sorted(maps.Keys(d.byFile))
	out := make([]*reconcile.Desired, 0, len(files))
	seen := map[string]bool{}
	// A plan whose file did not change is the same *plan.Plan (the
	// validation cache keeps it): its Desired, worked out before, stands
	// when nothing else it holds moved.
	prev := make(map[*plan.Plan]*reconcile.Desired, len(d.desired))
	for _, ds := range d.desired {
		prev[ds.Plan] = ds
	}
	for _, f := range files {
		p := d.byFile[f].plan
		if seen[p.Metadata.Name] {
			continue // the same name in two files: the loader reports it
		}
		seen[p.Metadata.Name] = true
		commit := d.human
		if v, ok := d.versions[f]; ok {
			commit = v.commit
		}
		if ds, ok := prev[p]; ok && ds.Commit == string(commit) && ds.Resume == d.resume[p.Metadata.Name] {
			out = append(out, ds)
			continue
		}
		ds := reconcile.NewDesired(p, string(commit))
		// A forced rollback names the target it forces, so that the
		// annotation left in the plan forces nothing later.
		ds.Force = p.Metadata.Annotations[plan.ForceRollbackAnnotation] == ds.Target.String()
		ds.Restore = p.Metadata.Annotations[plan.RestoreCheckpointAnnotation]
		ds.Resume = d.resume[p.Metadata.Name]
		out = append(out, ds)
	}
	d.desired = out
}

// snapshot returns the plans the safety loop works on.
func (d *Daemon) snapshot() []*reconcile.Desired {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.desired
}

// keptLocked returns the last good version of every followed plan, as the
// store keeps them. It holds d.mu.
func (d *Daemon) keptLocked() []store.KeptPlan {
	out := make([]store.KeptPlan, 0, len(d.byFile))
	for file, src := range d.byFile {
		kp := store.KeptPlan{Plan: src.plan.Metadata.Name, File: file, Data: src.data, Target: src.target, SavedAt: d.Clock.Now()}
		if v, ok := d.versions[file]; ok {
			kp.Commit = string(v.commit)
			kp.Digest = v.cur
			kp.Own = slices.Sorted(maps.Keys(v.own))
		}
		out = append(out, kp)
	}
	return out
}

// keep saves the plans followed to the store, those that changed, and
// forgets the plans no longer followed. A failure is logged: the next sync
// tries again.
func (d *Daemon) keep(ctx context.Context, kept []store.KeptPlan) {
	if d.Plans == nil {
		return
	}
	d.mu.Lock()
	if d.keptKeys == nil {
		d.keptKeys = map[string]string{}
	}
	saved := maps.Clone(d.keptKeys)
	d.mu.Unlock()
	now := map[string]string{}
	var changed []store.KeptPlan
	for _, kp := range kept {
		key := keptKey(kp)
		now[kp.Plan] = key
		if saved[kp.Plan] != key {
			changed = append(changed, kp)
		}
	}
	batch, ok := d.Plans.(PlanBatchKeeper)
	if ok && len(changed) > 1 {
		if err := batch.SavePlans(ctx, changed); err != nil {
			d.log().Error("keep the last good plans", "plans", len(changed), "err", err)
			for _, kp := range changed {
				delete(now, kp.Plan)
			}
		}
		changed = nil
	}
	for _, kp := range changed {
		if err := d.Plans.SavePlan(ctx, kp); err != nil {
			d.log().Error("keep the last good plan", "plan", kp.Plan, "err", err)
			delete(now, kp.Plan)
		}
	}
	for name := range saved {
		if _, ok := now[name]; ok {
			continue
		}
		if err := d.Plans.DeletePlan(ctx, name); err != nil {
			d.log().Error("forget a kept plan", "plan", name, "err", err)
			now[name] = saved[name]
		}
	}
	d.mu.Lock()
	d.keptKeys = now
	d.mu.Unlock()
}

// keptKey is what keep compares to save a kept plan only when it changed.
func keptKey(kp store.KeptPlan) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s|%v", kp.File, digest(kp.Data), kp.Target, kp.Commit, kp.Digest, kp.Own)
}

// restoreKept, once and before any sync, follows the plans the store kept:
// a restarted daemon guards its migrations before Git answers.
func (d *Daemon) restoreKept(ctx context.Context) {
	d.mu.Lock()
	done := d.restored || d.synced
	d.restored = true
	d.mu.Unlock()
	if done || d.Plans == nil {
		return
	}
	kept, err := d.Plans.LoadPlans(ctx)
	if err != nil {
		d.log().Error("load the kept plans; waiting for the first sync", "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.synced {
		return
	}
	keys := map[string]string{}
	for _, kp := range kept {
		p, err := d.Validator.ValidateOne(plan.Source{Path: kp.File, Data: kp.Data})
		if err != nil {
			d.log().Error("a kept plan is not valid any more; it waits for the first sync", "plan", kp.Plan, "err", err)
			continue
		}
		if kp.Target != "" {
			pos, err := plan.ParsePosition(kp.Target)
			if err != nil || p.PhaseIndex(pos.Phase) < 0 && !pos.IsStart() {
				d.log().Error("a kept plan's target is not one of its positions; it waits for the first sync", "plan", kp.Plan, "target", kp.Target)
				continue
			}
			q := *p
			q.Spec.Target = p.TargetFor(pos)
			p = &q
		}
		d.byFile[kp.File] = followed{plan: p, data: kp.Data, target: kp.Target}
		v := &version{commit: gitops.Hash(kp.Commit), cur: kp.Digest, own: map[string]bool{}}
		for _, s := range kp.Own {
			v.own[s] = true
		}
		d.versions[kp.File] = v
		d.heads[kp.File] = v
		keys[kp.Plan] = keptKey(kp)
	}
	d.keptKeys = keys
	d.rebuildLocked()
	if len(d.byFile) > 0 {
		d.log().Info("guarding the plans kept from before the restart until the first sync", "plans", len(d.byFile))
	}
}

// resumeSignatureChecks tells a repository that has not synced yet where
// the daemon left off: the commit of the record saved last. A push made
// while the daemon was down then has every commit judged, not only its
// newest.
func (d *Daemon) resumeSignatureChecks(ctx context.Context) error {
	d.mu.Lock()
	synced := d.synced
	d.mu.Unlock()
	r, ok := d.Git.(SignatureResumer)
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
			reason := fmt.Sprintf("plan %s renamed %s at commit %s: its migration carries on at %s", q.Metadata.Name, p.Metadata.Name, shorthash.Of(string(commit)), old.Position)
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
	files, ok := d.statusGit().(FileReader)
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

// checkStatusFiles forgets what was written of each status file that a
// person changed or removed at the head, so that it is written again: Git
// says where every migration is, whoever edited the file. It holds d.mu.
func (d *Daemon) checkStatusFiles() {
	files, ok := d.statusGit().(FileReader)
	if !ok {
		return
	}
	for name, w := range d.written {
		b, err := files.ReadFile(d.StatusDir + "/" + name + ".yaml")
		if err != nil || digest(b) != w.sum {
			delete(d.written, name)
		}
	}
}

// maxStatusFile bounds a status file read from Git: the daemon's own are a
// few kilobytes (a history tail of ten entries).
const maxStatusFile = 1 << 20

// parseStatus reads the status file of the plan named name, as Git has
// it: written by a daemon, perhaps another one, or edited by a person.
func parseStatus(b []byte, name string) (Status, error) {
	var st Status
	if len(b) > maxStatusFile {
		return st, fmt.Errorf("status file of %s: %d bytes, over the %d a status file may have", name, len(b), maxStatusFile)
	}
	if err := yaml.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("status file of %s: %w", name, err)
	}
	if st.Kind != "MigrationStatus" || st.Metadata.Name != name {
		return st, fmt.Errorf("not the status of %s", name)
	}
	return st, nil
}

// resumeFrom reads a status file into the record it describes.
func resumeFrom(b []byte, name string) (*store.Record, error) {
	st, err := parseStatus(b, name)
	if err != nil {
		return nil, err
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
