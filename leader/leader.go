// Package leader runs work on one replica at a time: replicas of the daemon
// campaign for a coordination.k8s.io Lease with client-go's leader
// election, and only the holder runs its work. When the holder dies, a
// standby takes the lease once it expires, within the lease duration, and
// starts its work, which resumes from the durable record (the store), not
// from anything the dead replica held in memory.
//
// The package elects; it does not fence. A holder that stops renewing
// (cut off from the API server) has its work's context cancelled after the
// renew deadline, which is shorter than the lease duration, so it stops
// before anyone else can start; work that ignores its context could
// overlap with the next leader's, and the store's optimistic concurrency is
// what keeps the record consistent then.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease names the Lease the replicas campaign for.
type Lease struct {
	Namespace string
	Name      string
}

func (l Lease) String() string { return l.Namespace + "/" + l.Name }

// Durations are the timings of the election, as client-go names them.
// Zero values take the defaults of Kubernetes' own controllers.
type Durations struct {
	// Lease is how long a lease holds without renewal: a standby takes
	// over at most this long after the leader died (default 15s).
	Lease time.Duration
	// Renew is how long the leader keeps trying to renew before it stops
	// its work; shorter than Lease (default 10s).
	Renew time.Duration
	// Retry is the interval between two tries to acquire or renew
	// (default 2s).
	Retry time.Duration
}

func (d Durations) withDefaults() Durations {
	if d.Lease <= 0 {
		d.Lease = 15 * time.Second
	}
	if d.Renew <= 0 {
		d.Renew = 10 * time.Second
	}
	if d.Retry <= 0 {
		d.Retry = 2 * time.Second
	}
	return d
}

// Option configures Run.
type Option func(*options)

type options struct {
	log         *slog.Logger
	onNewLeader func(identity string)
}

// WithLogger reports elections won and lost.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithOnNewLeader calls f with the identity of every new leader observed,
// this replica's included (for status pages and metrics).
func WithOnNewLeader(f func(identity string)) Option { return func(o *options) { o.onNewLeader = f } }

// Run campaigns for lease as identity until ctx ends, and while this
// replica holds the lease, runs onLead with a context that ends when the
// lease is lost. After a loss it waits for onLead to return, then
// campaigns again. When ctx ends, it waits for onLead to return and then
// releases the lease, so that a standby takes over at once rather than
// after the lease duration. It returns ctx's error, or an error if the
// election cannot be set up.
func Run(ctx context.Context, cfg *rest.Config, identity string, lease Lease, d Durations, onLead func(ctx context.Context), opts ...Option) error {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if identity == "" {
		return errors.New("leader election: empty identity")
	}
	if lease.Namespace == "" || lease.Name == "" {
		return fmt.Errorf("leader election: lease %q needs a namespace and a name", lease.String())
	}
	if onLead == nil {
		return errors.New("leader election: no work to run")
	}
	d = d.withDefaults()
	cfg = rest.CopyConfig(cfg)
	// Renewals must not queue behind the client's rate limit, and must
	// give up within the renew deadline.
	cfg.QPS, cfg.Burst = 20, 40
	if cfg.Timeout == 0 || cfg.Timeout > d.Renew {
		cfg.Timeout = d.Renew
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: lease.Namespace, Name: lease.Name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}

	for {
		// A new elector per term: its callbacks belong to this term.
		leading := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          lock,
			Name:          lease.String(),
			LeaseDuration: d.Lease,
			RenewDeadline: d.Renew,
			RetryPeriod:   d.Retry,
			// Released below, after the work has stopped: client-go would
			// release as soon as the context ends, while the work may
			// still be finishing a step.
			ReleaseOnCancel: false,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) { leading <- ctx },
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					if o.onNewLeader != nil {
						o.onNewLeader(id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election for %s: %w", lease, err)
		}
		elected := make(chan struct{})
		go func() {
			defer close(elected)
			le.Run(ctx)
		}()
		select {
		case term := <-leading:
			// The work runs here, not in client-go's goroutine, so that
			// the next campaign starts only once it has returned.
			o.log.Info("leading", "lease", lease.String(), "identity", identity)
			onLead(term)
			<-elected
			o.log.Info("stopped leading", "lease", lease.String(), "identity", identity)
		case <-elected:
			// Not elected before ctx ended, or elected and the term
			// already over: either way no work ran.
		}
		if ctx.Err() != nil {
			release(lock, identity, d.Renew, o.log)
			return ctx.Err()
		}
	}
}

// release gives up the lease if identity still holds it, the way client-go
// does: a holder-less record whose one-second lease is already over.
func release(lock *resourcelock.LeaseLock, identity string, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for range 3 {
		rec, _, err := lock.Get(ctx)
		if err != nil || rec.HolderIdentity != identity {
			return
		}
		now := metav1.NewTime(time.Now())
		err = lock.Update(ctx, resourcelock.LeaderElectionRecord{
			LeaderTransitions: rec.LeaderTransitions, LeaseDurationSeconds: 1, RenewTime: now, AcquireTime: now,
		})
		if err == nil {
			log.Info("released the lease", "lease", lock.Describe(), "identity", identity)
			return
		}
		if !apierrors.IsConflict(err) {
			log.Warn("cannot release the lease", "lease", lock.Describe(), "identity", identity, "err", err)
			return
		}
	}
}
