package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// This file holds what the daemon tells a forge (GitHub, GitLab, Gitea):
// the pull request of a pull-request promotion, and the progress of each
// migration as a commit status on the commit that moved its target. Both
// run on the Git loop, never the safety loop, each call under
// CommitTimeout.

// PullRequest is a pull request to open for a branch the daemon pushed,
// into the tracked branch: Before and After are the plans it changes, as
// they are there and on Branch, for the body to show what merging it
// does.
type PullRequest struct {
	Branch        string
	Title         string
	Message       string
	Before, After []*plan.Plan
}

// PullRequestOpener opens a pull request and returns its URL.
type PullRequestOpener func(ctx context.Context, pr PullRequest) (string, error)

// CommitStatus is a migration's progress, to be shown on Commit: State is
// pending, success or failure.
type CommitStatus struct {
	Plan        string
	Commit      string
	State       string
	Description string
}

// CommitStatusSetter sets a commit status on the forge.
type CommitStatusSetter func(ctx context.Context, s CommitStatus) error

// commitStatusState is the commit status of a migration whose record says
// status: pending while it moves or waits, success at its target or done,
// failure once rolled back, frozen or breached.
func commitStatusState(status string) string {
	switch status {
	case reconcile.StatusHolding, reconcile.StatusCompleted:
		return "success"
	case reconcile.StatusRolledBack, reconcile.StatusFrozen, reconcile.StatusBreached:
		return "failure"
	}
	return "pending"
}

// forgeSent is a commit status sent (or tried) for a plan.
type forgeSent struct {
	key string // commit and state
	ok  bool
	at  time.Time
}

// reportCommitStatuses sets, for each followed plan, the commit status its
// record calls for on the commit that last moved it, once per (commit,
// state); a failed call is tried again after StatusInterval. It runs on
// the Git loop.
func (d *Daemon) reportCommitStatuses(ctx context.Context) {
	if d.CommitStatus == nil {
		return
	}
	now := d.Clock.Now()
	// Another replica's plans: it reports them, from a view that is not
	// stale.
	for _, ds := range d.owned(d.snapshot()) {
		if ctx.Err() != nil {
			return
		}
		name := ds.Plan.Metadata.Name
		if ds.Commit == "" {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil || rec.Status == "" {
			continue // nothing done yet
		}
		state := commitStatusState(rec.Status)
		key := ds.Commit + " " + state
		d.mu.Lock()
		if d.forgeSent == nil {
			d.forgeSent = map[string]forgeSent{}
		}
		last := d.forgeSent[name]
		d.mu.Unlock()
		if last.key == key && (last.ok || now.Sub(last.at) < d.StatusInterval) {
			continue
		}
		desc := fmt.Sprintf("%s at %s, target %s", rec.Status, rec.Position, ds.Target)
		if rec.Reason != "" && state == "failure" {
			desc += ": " + rec.Reason
		}
		cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
		err = d.CommitStatus(cctx, CommitStatus{Plan: name, Commit: ds.Commit, State: state, Description: desc})
		cancel()
		d.mu.Lock()
		d.forgeSent[name] = forgeSent{key: key, ok: err == nil, at: now}
		d.mu.Unlock()
		if err != nil {
			d.log().Warn("commit status not set", "plan", name, "commit", ds.Commit, "state", state, "err", err)
			continue
		}
		d.log().Info("commit status set", "plan", name, "commit", ds.Commit, "state", state)
	}
}

// Pull requests that could not be opened are tried again after
// StatusInterval, then twice as long each time, up to maxPullRequestTries
// in all; the branch stays pushed whatever happens, so a person can still
// open the request by hand.
const (
	maxPullRequestTries = 6
	maxPullRequestWait  = time.Hour
)

// unopened is a pull request not opened yet: the plans it promotes, how
// many times it was tried, and when it is tried next.
type unopened struct {
	pr    PullRequest
	plans []string
	tries int
	next  time.Time
}

// openPullRequest opens the pull request of a promotion pushed to a
// branch, tried tries times before, and says how that went in the plans'
// PromotionProposed condition. A failure is queued to be tried again.
func (d *Daemon) openPullRequest(ctx context.Context, pr PullRequest, plans []string, tries int) {
	if d.OpenPullRequest == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, d.CommitTimeout)
	u, err := d.OpenPullRequest(cctx, pr)
	cancel()
	tries++
	var note string
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unopened == nil {
		d.unopened = map[string]*unopened{}
	}
	switch {
	case err == nil:
		delete(d.unopened, pr.Branch)
		note = "; pull request " + u
		d.log().Info("pull request opened", "branch", pr.Branch, "url", u, "tries", tries)
	case tries >= maxPullRequestTries:
		delete(d.unopened, pr.Branch)
		note = fmt.Sprintf("; the pull request could not be opened after %d tries (open it by hand): %v", tries, err)
		d.log().Error("pull request not opened, given up", "branch", pr.Branch, "tries", tries, "err", err)
	default:
		wait := min(d.StatusInterval<<(tries-1), maxPullRequestWait)
		d.unopened[pr.Branch] = &unopened{pr: pr, plans: plans, tries: tries, next: d.Clock.Now().Add(wait)}
		note = fmt.Sprintf("; the pull request could not be opened (tried %d of %d times, again in %s): %v", tries, maxPullRequestTries, wait, err)
		d.log().Error("pull request not opened", "branch", pr.Branch, "tries", tries, "again in", wait, "err", err)
	}
	for _, name := range plans {
		p, ok := d.proposals[name]
		if !ok || p.cond.Type != "PromotionProposed" {
			continue // promoted or moved on since
		}
		base, _, _ := strings.Cut(p.cond.Message, "; the pull request")
		base, _, _ = strings.Cut(base, "; pull request ")
		p.cond.Message = base + note
		d.proposals[name] = p
	}
	signal(d.wakeCommit)
}

// retryPullRequests tries again the pull requests due. It runs on the Git
// loop.
func (d *Daemon) retryPullRequests(ctx context.Context) {
	now := d.Clock.Now()
	d.mu.Lock()
	var due []*unopened
	for _, u := range d.unopened {
		if !now.Before(u.next) {
			due = append(due, u)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(due, func(a, b *unopened) int { return strings.Compare(a.pr.Branch, b.pr.Branch) })
	for _, u := range due {
		if ctx.Err() != nil {
			return
		}
		d.openPullRequest(ctx, u.pr, u.plans, u.tries)
	}
}
