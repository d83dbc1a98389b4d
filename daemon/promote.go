package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// This file holds what the daemon does for plans that relate to others:
// what gates read of other plans (peers), and the promotions it commits or
// proposes.

// Signer is implemented by a repository that signs the commits it makes
// (gitops.Repo with a signing key).
type Signer interface {
	Signs() bool
}

// Proposer opens the branch a pull-request promotion is pushed to,
// created from the tracked branch when missing.
type Proposer func(ctx context.Context, branch string) (Git, error)

// promotion is a move of targets asked for by plans (a group's members
// together), waiting for the Git loop.
type promotion struct {
	ds []*reconcile.Desired
	as []reconcile.Action
}

// peers tells what is known of the plans named: from the store for the
// plans this daemon follows, else from their status files in Git as last
// read (another daemon's plans). It never waits on Git.
func (d *Daemon) peers(ctx context.Context, names []string) map[string]reconcile.Peer {
	d.mu.Lock()
	own := map[string]*reconcile.Desired{}
	for _, ds := range d.desired {
		own[ds.Plan.Metadata.Name] = ds
	}
	foreign := maps.Clone(d.peerStatus)
	d.mu.Unlock()
	out := make(map[string]reconcile.Peer, len(names))
	for _, name := range names {
		if ds, ok := own[name]; ok {
			rec, err := d.Store.Load(ctx, name)
			if err != nil {
				continue // not found: the gate stays closed
			}
			out[name] = reconcile.Peer{Plan: name, Found: true, Position: rec.Position, Status: rec.Status,
				Reached: rec.Reached, Source: "record", Order: ds.Plan}
			continue
		}
		if st, ok := foreign[name]; ok {
			pos := plan.Position{Phase: st.Phase, Percentage: st.Percentage}
			if st.Phase == plan.RollbackStart {
				pos = plan.Start
			}
			out[name] = reconcile.Peer{Plan: name, Found: true, Position: pos, Status: st.State, Reached: st.Reached, Source: "status file"}
		}
	}
	return out
}

// foreignPeers are the plans that gates of the followed plans name and
// this daemon does not follow. It holds d.mu.
func (d *Daemon) foreignPeersLocked() []string {
	own := map[string]bool{}
	for _, ds := range d.desired {
		own[ds.Plan.Metadata.Name] = true
	}
	var out []string
	for _, ds := range d.desired {
		for _, g := range ds.Plan.Gates() {
			if !own[g.Plan] && !slices.Contains(out, g.Plan) {
				out = append(out, g.Plan)
			}
		}
	}
	slices.Sort(out)
	return out
}

// readPeers reads the status files of the plans other daemons follow that
// gates here name, at the heads last synced; the status branch's head is
// fetched first when the status files live on a branch of their own. It
// runs on the Git loop.
func (d *Daemon) readPeers(ctx context.Context) {
	d.mu.Lock()
	names := d.foreignPeersLocked()
	d.mu.Unlock()
	if len(names) == 0 {
		return
	}
	if d.StatusGit != nil {
		if _, err := d.StatusGit.Sync(ctx); err != nil {
			d.log().Warn("read the status branch for gates", "err", err)
		}
	}
	files, ok := d.statusGit().(FileReader)
	if !ok {
		return
	}
	got := map[string]StatusBody{}
	for _, name := range names {
		b, err := files.ReadFile(d.StatusDir + "/" + name + ".yaml")
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				d.log().Warn("read the status file a gate names", "plan", name, "err", err)
			}
			continue
		}
		st, err := parseStatus(b, name)
		if err != nil {
			d.log().Warn("the status file a gate names cannot be read", "plan", name, "err", err)
			continue
		}
		got[name] = st.Status
	}
	d.mu.Lock()
	changed := !maps.EqualFunc(got, d.peerStatus, func(a, b StatusBody) bool {
		return Status{Status: a}.Key() == Status{Status: b}.Key()
	})
	d.peerStatus = got
	d.mu.Unlock()
	if changed {
		d.wakeEveryPlan()
	}
}

// onPromote queues a promotion for the Git loop; it runs on the safety
// loop and never blocks.
func (d *Daemon) onPromote(_ context.Context, ds []*reconcile.Desired, as []reconcile.Action) {
	names := make([]string, len(ds))
	for i, x := range ds {
		names[i] = x.Plan.Metadata.Name
	}
	d.mu.Lock()
	d.promotions[strings.Join(names, ",")] = promotion{ds: ds, as: as}
	d.mu.Unlock()
	signal(d.wakeCommit)
}

// commitPromotions commits (auto) or proposes on a branch (pull-request)
// the promotions the safety loop asked for. A promotion whose plans' file
// changed since (a person moved a target) is dropped: the plans ask again
// if they still should.
func (d *Daemon) commitPromotions(ctx context.Context) {
	d.mu.Lock()
	queued := d.promotions
	d.promotions = map[string]promotion{}
	d.mu.Unlock()
	for _, key := range slices.Sorted(maps.Keys(queued)) {
		if ctx.Err() != nil {
			return
		}
		d.promote(ctx, queued[key])
	}
}

func (d *Daemon) promote(ctx context.Context, pr promotion) {
	first := pr.ds[0]
	policy := first.Plan.Spec.Promotion
	var names, moves []string
	for i, ds := range pr.ds {
		names = append(names, ds.Plan.Metadata.Name)
		moves = append(moves, fmt.Sprintf("%s %s → %s", ds.Plan.Metadata.Name, ds.Target, pr.as[i].To.Phase))
	}
	if policy == plan.PromotionAuto && d.RequireSigned {
		if s, ok := d.Git.(Signer); !ok || !s.Signs() {
			d.refusePromotion(pr.ds, "signed mode: an auto promotion needs the daemon's own signing key (git.signingKeyFile), trusted in git.trustedKeysFile; promote with a signed commit instead")
			return
		}
	}
	group := first.Plan.Spec.Group
	subject := strings.Join(moves, ", ")
	scope := first.Plan.Metadata.Name
	if len(pr.ds) > 1 {
		scope = "group " + group
	}
	var why []string
	for i, ds := range pr.ds {
		why = append(why, ds.Plan.Metadata.Name+": "+pr.as[i].Reason+".")
		for _, g := range pr.as[i].Gates {
			why = append(why, "  gate "+g.Reason)
		}
	}
	msg := fmt.Sprintf("promote(%s): %s\n\n%s\n\nhal9-migrate moves spec.target on (promotion: %s).", scope, subject, strings.Join(why, "\n"), policy)
	if d.SkipCI && policy == plan.PromotionAuto {
		msg = "[skip ci] " + msg
	}
	trailers := map[string]string{gitops.TrailerPlan: strings.Join(names, ", "), gitops.TrailerAction: "promote"}
	if len(pr.ds) > 1 {
		trailers[gitops.TrailerGroup] = group
	}
	pushed := map[string][]byte{}
	var before, after []*plan.Plan // for a pull request's body
	d.mu.Lock()
	versions := make([]*version, len(pr.ds))
	for i, ds := range pr.ds {
		versions[i] = d.versions[ds.Plan.File]
	}
	d.mu.Unlock()
	req := gitops.CommitRequest{
		Message: msg, Author: d.Author, Trailers: trailers,
		Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
			clear(pushed)
			before, after = nil, nil
			out := map[string][]byte{}
			for i, ds := range pr.ds {
				file := ds.Plan.File
				data, err := read(file)
				if err != nil {
					return nil, err
				}
				cur, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: data})
				if err != nil {
					return nil, fmt.Errorf("%s is invalid at the branch head: %w", file, err)
				}
				if cur.TargetPosition() != ds.Target {
					d.log().Debug("a promotion's plan moved since it was asked for; not promoted", "plan", ds.Plan.Metadata.Name,
						"target", cur.TargetPosition().String(), "asked at", ds.Target.String())
					return nil, nil // moved since: the plans ask again if they still should
				}
				edited, err := plan.ApplyEdits(file, data, plan.SetTarget(plan.Target{Phase: pr.as[i].To.Phase}))
				if err != nil {
					return nil, err
				}
				next, err := d.Validator.ValidateOne(plan.Source{Path: file, Data: edited})
				if err != nil {
					return nil, fmt.Errorf("the promotion would leave %s invalid: %w", file, err)
				}
				out[file] = edited
				before, after = append(before, cur), append(after, next)
			}
			maps.Copy(pushed, out)
			return out, nil
		},
	}
	cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
	defer cancel()
	if policy == plan.PromotionPullRequest {
		branch := "hal9-migrate/promote/" + strings.ReplaceAll(scope, " ", "-") + "-" + pr.as[0].To.Phase
		d.mu.Lock()
		done := d.proposed[branch]
		d.mu.Unlock()
		if done || d.Propose == nil {
			return
		}
		g, err := d.Propose(cctx, branch)
		if err == nil {
			_, err = g.Commit(cctx, req)
		}
		if err != nil {
			d.log().Error("promotion not proposed", "plans", strings.Join(names, ","), "branch", branch, "err", err)
			return
		}
		d.mu.Lock()
		d.proposed[branch] = true
		d.mu.Unlock()
		// Once per branch, as the push: proposed is set before. A pull
		// request that could not be opened is tried again on the Git loop
		// (retryPullRequests).
		d.mu.Lock()
		for _, ds := range pr.ds {
			d.proposals[ds.Plan.Metadata.Name] = proposal{at: ds.Target, cond: Condition{Type: "PromotionProposed",
				Message: fmt.Sprintf("branch %s moves the target on (%s); merge it to promote", branch, subject)}}
		}
		d.mu.Unlock()
		if len(after) > 0 {
			d.openPullRequest(ctx, PullRequest{Branch: branch, Title: strings.SplitN(msg, "\n", 2)[0],
				Message: msg, Before: before, After: after}, names, 0)
		}
		d.log().Info("promotion proposed", "plans", strings.Join(names, ","), "branch", branch)
		signal(d.wakeCommit)
		return
	}
	if _, err := d.Git.Commit(cctx, req); err != nil {
		d.log().Error("promotion not committed", "plans", strings.Join(names, ","), "err", err)
		return
	}
	d.mu.Lock()
	for i, ds := range pr.ds {
		if b, ok := pushed[ds.Plan.File]; ok && versions[i] != nil {
			// The daemon's own content: not a person's change, so a
			// position that failed under the person's commit stays failed.
			sum := digest(b)
			versions[i].cur, versions[i].own[sum] = sum, true
		}
	}
	d.mu.Unlock()
	if len(pushed) > 0 {
		d.log().Info("promoted", "plans", strings.Join(names, ","), "to", pr.as[0].To.Phase)
	}
	signal(d.wakeSync)
}

// refusePromotion records why the plans' promotion is not made, in their
// status.
func (d *Daemon) refusePromotion(ds []*reconcile.Desired, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, x := range ds {
		n := x.Plan.Metadata.Name
		if p, ok := d.proposals[n]; ok && p.cond.Type == "PromotionRefused" && p.at == x.Target {
			continue
		}
		d.proposals[n] = proposal{at: x.Target, cond: Condition{Type: "PromotionRefused", Message: why}}
		d.log().Error("promotion refused", "plan", n, "reason", why)
	}
	signal(d.wakeCommit)
}

// proposal is a promotion proposed or refused while the plan's target was
// at: it is shown until the target moves.
type proposal struct {
	at   plan.Position
	cond Condition
}
