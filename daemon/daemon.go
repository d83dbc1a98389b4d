// Package daemon is the reconciler's process: two loops over one set of
// plans, and the HTTP side that shows them.
//
// The safety loop (safety.go) evaluates guardrails, decides and drives the
// workloads through reconcile.Runner, every Interval and at once when a
// guardrail measurement, a check or a new set of plans arrives. It works on
// the last good snapshot of the plans and waits on nothing outside it: not
// Git, not plan parsing, not commits, not a metrics backend (guardrails are
// measured beside it, each within its timeout). A breach is rolled back
// there and then.
//
// The Git loop (sync.go, commit.go) follows the branch (a poll every Poll,
// at once on a push webhook), validates the plans within their budgets,
// applies the signature gate, and hands the safety loop a new snapshot. It
// also writes back what happened: every automatic rollback at once,
// lowering spec.target so that Git names the live position, and each
// plan's status file, coalesced. Every call it makes has a deadline, and a
// Git remote that hangs or a plan that cannot be parsed delays only this
// loop.
//
// The daemon keeps the last good version of every plan, in memory and in
// the store, so that a commit that breaks a plan, or a restart while Git
// does not answer, leaves its migration guarded. It decides nothing
// itself: reconcile does.
package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/tracing"
)

// Git is what the daemon needs of the plan repository.
type Git interface {
	gitops.Reader
	gitops.Writer
}

// FileReader reads a file of the repository at the head last synced
// (gitops.Repo has it): the daemon reads status files through it to resume
// a migration whose record was lost.
type FileReader interface {
	ReadFile(path string) ([]byte, error)
}

// SignatureResumer lets a repository that has not synced yet judge the
// signatures of every commit since one the daemon acted on before a
// restart (gitops.Repo has it).
type SignatureResumer interface {
	CheckSignaturesSince(commit gitops.Hash)
}

// Forgetter is implemented by the parts that keep state per plan (the
// guardrail evaluator's `for` windows), to drop it when a plan goes.
type Forgetter interface {
	Forget(plan string)
}

// PlanKeeper keeps the last good version of each followed plan across
// restarts (store.SQL has it).
type PlanKeeper interface {
	SavePlan(ctx context.Context, kp store.KeptPlan) error
	DeletePlan(ctx context.Context, planName string) error
	LoadPlans(ctx context.Context) ([]store.KeptPlan, error)
}

// Defaults of the Daemon's durations.
const (
	DefaultPoll           = time.Minute
	DefaultInterval       = 30 * time.Second
	DefaultStatusInterval = time.Minute
	DefaultSyncTimeout    = 2 * time.Minute
	DefaultCommitTimeout  = time.Minute
)

// Daemon runs the loops. Set the fields, then call Run.
type Daemon struct {
	Git Git
	// StatusGit, when set, is where the status files are committed and
	// read: a branch of their own (statusBranch), so that the tracked
	// branch receives only plan changes and rollbacks. Nil: Git.
	StatusGit Git
	Validator *plan.Validator
	Runner    *reconcile.Runner
	Store     store.Store
	// Plans, when set, keeps the last good plans across restarts: a
	// restarted daemon guards its migrations from them before its first
	// sync. Nil: it waits for the first sync.
	Plans PlanKeeper
	Clock clock.WithTicker
	// Poll is how often the branch head is checked when no webhook
	// arrives (DefaultPoll); Interval how often every plan is reconciled
	// (DefaultInterval).
	Poll, Interval time.Duration
	// StatusInterval is how often at most a plan's status file is
	// committed for progress (DefaultStatusInterval); rollbacks, freezes
	// and new conditions go out at once.
	StatusInterval time.Duration
	// SyncTimeout bounds one sync: listing, fetching, validating and
	// gating the plans (DefaultSyncTimeout); CommitTimeout one commit with
	// its fetches, pushes and retries (DefaultCommitTimeout).
	SyncTimeout, CommitTimeout time.Duration
	// Author signs the daemon's commits; StatusDir holds the status files
	// ("status"); SkipCI adds "[skip ci]" to their messages.
	Author    gitops.Signature
	StatusDir string
	SkipCI    bool
	Log       *slog.Logger
	// RequireSigned gates changes on signatures: a plan changed by commits
	// that are not all signed by a trusted key (gitops.Snapshot.Signed)
	// keeps its last signed version, except that a lowered target is
	// followed at once (a rollback never waits for a signature); the
	// status says ChangeNotSigned. Set it when the repository is opened
	// with trusted keys.
	RequireSigned bool
	// Metrics, when set, is told about every sync, cycle, decision and
	// rollback.
	Metrics Metrics
	// Prober, when set, lets pre-check reach the metrics backend and run
	// each query once.
	Prober Prober
	// Propose opens the branch a pull-request promotion is pushed to; nil:
	// plans with promotion: pull-request are not proposed.
	Propose Proposer
	// Notify, when set, is told of every transition people care about
	// (notify.Dispatcher); it must not block.
	Notify Notifier
	// Tracer, when set, traces the loops' cycles (trace.go); Traces is
	// the ring of recent traces the API serves.
	Tracer trace.TracerProvider
	Traces *tracing.Ring
	// OpenPullRequest, when set, opens the pull request of a branch a
	// promotion was pushed to (forge.go).
	OpenPullRequest PullRequestOpener
	// CommitStatus, when set, shows each migration's progress as a commit
	// status on the commit that moved its target (forge.go).
	CommitStatus CommitStatusSetter
	// Shards, when set, is this replica's share of the plans among
	// several replicas (shards.go): the safety loop steps, and the Git
	// loop writes back, only the plans of the shards it holds; the Git
	// loop syncs every plan all the same.
	Shards Sharder

	once sync.Once
	mu   sync.Mutex
	// The plans, as the Git loop last left them (sync.go).
	head     gitops.Hash              // the head last synced
	human    gitops.Hash              // the newest commit at or below head that is not the daemon's own
	byFile   map[string]followed      // what is followed of each file
	keptKeys map[string]string        // what the store keeps of each plan, as keep compares it
	restored bool                     // the kept plans have been read
	versions map[string]*version      // the version followed of each file
	heads    map[string]*version      // the version of each file's content at head
	invalid  map[string]invalidFile   // files broken at head, by file
	unsigned map[string]Condition     // changes kept back for want of a signature, by file
	resume   map[string]*store.Record // where each plan's status file at head says it is
	desired  []*reconcile.Desired     // the snapshot the safety loop works on
	fleet    fleetState               // what spares a sync of many plans its work (fleet.go)
	synced   bool                     // a sync has succeeded
	lastSync time.Time                // when the last sync succeeded
	// What the safety loop saw and did (safety.go, view.go).
	views     map[string]view // the latest decision, by plan
	reported  map[string]bool // plans last handed to Metrics
	lastCycle time.Time       // when the safety loop last finished a cycle
	started   time.Time       // when Run started
	// What the Git loop owes Git (commit.go).
	rollbacks  map[string]pendingRollback // rollbacks not yet committed, by plan
	scanned    bool                       // the records were searched for rollbacks a restart left uncommitted
	written    map[string]writtenStatus   // the status file last committed, by plan
	promotions map[string]promotion       // promotions asked for, by the plans' names
	proposed   map[string]bool            // branches a promotion was pushed to
	proposals  map[string]proposal        // a promotion proposed or refused, by plan
	peerStatus map[string]StatusBody      // status files of other daemons' plans gates name
	notified   map[string]map[string]bool // the conditions last notified, by plan (notify.go)
	forgeSent  map[string]forgeSent       // the commit status last sent, by plan (forge.go)
	unopened   map[string]*unopened       // pull requests to try opening again, by branch (forge.go)

	wakeSync   chan struct{}   // a webhook, or Sync asked: check the branch now
	wakeSafety chan struct{}   // plans in wakePlans, or all with wakeAll, want a step
	wakePlans  map[string]bool // under mu
	wakeAll    bool            // under mu
	wakeCommit chan struct{}   // a rollback or a new status to commit
}

// Metrics is what the daemon reports to its own metrics.
type Metrics interface {
	ObserveMigration(p *plan.Plan, rec store.Record)
	ObserveGuardrails(plan string, readings []reconcile.Reading)
	RolledBack(plan string)
	SetConditions(plan string, types []string)
	ReconcileDone(took time.Duration)
	// SafetyCycle reports a finished cycle of the safety loop: when, and
	// how long after it was due.
	SafetyCycle(at time.Time, lag time.Duration)
	// GitSynced reports a sync, when it ended, how long it took and how
	// it went.
	GitSynced(at time.Time, took time.Duration, err error)
	Forget(plan string)
}

func (d *Daemon) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (d *Daemon) init() {
	d.once.Do(func() {
		d.byFile = map[string]followed{}
		d.versions = map[string]*version{}
		d.heads = map[string]*version{}
		d.invalid = map[string]invalidFile{}
		d.unsigned = map[string]Condition{}
		d.resume = map[string]*store.Record{}
		d.views = map[string]view{}
		d.rollbacks = map[string]pendingRollback{}
		d.written = map[string]writtenStatus{}
		d.promotions = map[string]promotion{}
		d.proposed = map[string]bool{}
		d.proposals = map[string]proposal{}
		d.peerStatus = map[string]StatusBody{}
		d.wakeSync = make(chan struct{}, 1)
		d.wakeSafety = make(chan struct{}, 1)
		d.wakeCommit = make(chan struct{}, 1)
		d.wakePlans = map[string]bool{}
		if d.StatusDir == "" {
			d.StatusDir = "status"
		}
		if d.Poll <= 0 {
			d.Poll = DefaultPoll
		}
		if d.Interval <= 0 {
			d.Interval = DefaultInterval
		}
		if d.StatusInterval <= 0 {
			d.StatusInterval = DefaultStatusInterval
		}
		if d.SyncTimeout <= 0 {
			d.SyncTimeout = DefaultSyncTimeout
		}
		if d.CommitTimeout <= 0 {
			d.CommitTimeout = DefaultCommitTimeout
		}
		r := d.Runner
		if r == nil {
			return // an HTTP side alone, in tests
		}
		if r.OnRollback == nil {
			r.OnRollback = d.onRollback
		}
		if r.OnGroupRollback == nil {
			r.OnGroupRollback = d.onGroupRollback
		}
		if r.OnPromote == nil {
			r.OnPromote = d.onPromote
		}
		if r.Peers == nil {
			r.Peers = d.peers
		}
		if r.OnDecided == nil {
			r.OnDecided = d.onDecided
		}
		if r.Wake == nil {
			r.Wake = d.WakePlan
		}
		if r.Hold == nil && d.Shards != nil {
			r.Hold = d.holdUnit
		}
		if r.OnSaved == nil && d.Notify != nil {
			r.OnSaved = d.onSaved
		}
	})
}

// signal wakes a loop waiting on ch, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Wake asks the Git loop to check the branch now (a webhook arrived).
func (d *Daemon) Wake() {
	d.init()
	signal(d.wakeSync)
}

// WakePlan asks the safety loop to step the plan named name now: a
// measurement of one of its guardrails, or a check, has come in. It never
// blocks; the guardrail evaluator calls it.
func (d *Daemon) WakePlan(name string) {
	d.init()
	d.mu.Lock()
	d.wakePlans[name] = true
	d.mu.Unlock()
	signal(d.wakeSafety)
}

// wakeEveryPlan asks the safety loop to step every plan now: the plans
// changed.
func (d *Daemon) wakeEveryPlan() {
	d.mu.Lock()
	d.wakeAll = true
	d.mu.Unlock()
	signal(d.wakeSafety)
}

// Run runs the safety loop and the Git loop until ctx ends. Before the
// first sync the safety loop guards the plans kept in the store, if any.
func (d *Daemon) Run(ctx context.Context) error {
	d.init()
	d.mu.Lock()
	d.started = d.Clock.Now()
	d.mu.Unlock()
	d.restoreKept(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.gitLoop(ctx) })
	d.safetyLoop(ctx)
	wg.Wait()
	return ctx.Err()
}

// Step does in turn, once, what the loops do beside each other: sync the
// branch if its head moved, reconcile every plan, and commit the
// rollbacks and status files that are due. Tests and benchmarks use it for
// a deterministic daemon.
func (d *Daemon) Step(ctx context.Context) error {
	d.init()
	d.restoreKept(ctx)
	d.syncNow(ctx)
	d.cycle(ctx, nil, d.Clock.Now())
	d.commitRollbacks(ctx)
	d.commitPromotions(ctx)
	d.commitAcks(ctx)
	err := d.commitStatus(ctx, true)
	d.reportCommitStatuses(ctx)
	d.retryPullRequests(ctx)
	return err
}
