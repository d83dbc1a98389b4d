// Package drivers declares what the reconciler needs from a system that runs
// the stable and candidate workloads: observe them, bring about a traffic
// split, run one-off jobs, publish feature flags. Implementations live in
// sub-packages (docker, kubernetes, and fake for tests) and all pass the
// conformance suite in drivertest.
//
// A driver is bound to one plan's workloads. Every call is "make it so":
// repeating it is harmless, so the reconciler can repeat any call after a
// crash. A call made with a cancelled or expired ctx returns an error that
// wraps ctx.Err().
package drivers

import (
	"context"
	"errors"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// ErrJobNotFound is returned by JobStatus for an id never started.
var ErrJobNotFound = errors.New("job not found")

// Driver acts on one plan's workloads.
type Driver interface {
	// Observe reports the workloads as they are now.
	Observe(ctx context.Context) (State, error)
	// Apply brings about target and returns once the driver has done its
	// part (weights written, replicas requested); Observe shows the
	// outcome.
	Apply(ctx context.Context, target Target) error
	// StartJob starts a one-off job under id unless one with that id
	// exists already, and returns without waiting for it. The reconciler
	// enforces run.Timeout from the start it recorded; a driver may also
	// end the job at its timeout, reporting it Done and not Succeeded.
	StartJob(ctx context.Context, id string, run plan.Run) error
	// JobStatus reports on the job started under id.
	JobStatus(ctx context.Context, id string) (JobStatus, error)
	// PublishFlags makes flags, feature names with rollout percentages,
	// the whole set the application sees.
	PublishFlags(ctx context.Context, flags map[string]int) error
}

// Checkpointer is implemented by drivers that can snapshot the observed
// state before a phase and restore it later. A snapshot covers the traffic
// split, the replicas and the published flags; not jobs.
type Checkpointer interface {
	Snapshot(ctx context.Context) ([]byte, error)
	Restore(ctx context.Context, snapshot []byte) error
}

// JobRemover is implemented by drivers whose jobs leave something behind
// once done (a container, a Job and its pods). The reconciler calls
// RemoveJob once it has recorded a done job's outcome and logs: after it,
// JobStatus of the id reports ErrJobNotFound. Removing a job never started,
// or removed already, is harmless; removing one still running is an error,
// and leaves it running.
type JobRemover interface {
	RemoveJob(ctx context.Context, id string) error
}

// Target is the state the reconciler asks a driver to bring about.
type Target struct {
	// Traffic is the share of live requests, 0..100, the candidate gets.
	Traffic int `json:"traffic"`
	// Mirror is the share of requests, 0..100, copied to the candidate with
	// the responses dropped.
	Mirror int `json:"mirror"`
	// Decommission scales stable to zero.
	Decommission bool `json:"decommission,omitempty"`
}

// State is what a driver observes.
type State struct {
	// Traffic and Mirror are the split as the routing layer reports it. A
	// driver that can only approximate a share (by replica ratio) reports
	// the share it achieved, not the one asked for.
	Traffic int `json:"traffic"`
	Mirror  int `json:"mirror"`
	// Replica counts, desired and ready.
	StableReplicas    int `json:"stableReplicas"`
	StableReady       int `json:"stableReady"`
	CandidateReplicas int `json:"candidateReplicas"`
	CandidateReady    int `json:"candidateReady"`
	// Decommissioned is set when stable has been scaled to zero.
	Decommissioned bool `json:"decommissioned,omitempty"`
	// Flags are the feature flags published; nil and empty both mean none.
	Flags map[string]int `json:"flags,omitempty"`
	// ReplicaTotal is set by a driver that splits traffic by replica ratio
	// (traffic.RatioFor): the replica total it shares out. 0 otherwise.
	ReplicaTotal int `json:"replicaTotal,omitempty"`
}

// Matches reports whether s shows target brought about. For a driver that
// splits by replica ratio (s.ReplicaTotal set) the traffic must be exactly
// the share traffic.RatioFor reaches for the target with that total; otherwise it
// may be within tolerance percentage points of the target.
func (s State) Matches(t Target, tolerance int) bool {
	want := t.Traffic
	if s.ReplicaTotal > 0 {
		want, tolerance = traffic.RatioFor(t.Traffic, s.ReplicaTotal).Share, 0
	}
	d := s.Traffic - want
	return d <= tolerance && -d <= tolerance && s.Mirror == t.Mirror && s.Decommissioned == t.Decommission
}

// Converging reports whether s, split by replica ratio, is set for target
// and only waiting for replicas to become ready: the desired counts are the
// ones traffic.RatioFor gives, some are not ready yet, and the share of the ready
// ones (what the traffic follows) is still short of it. That is not drift:
// applying target again would change nothing.
func (s State) Converging(t Target) bool {
	if s.ReplicaTotal <= 0 || s.Mirror != t.Mirror || s.Decommissioned != t.Decommission {
		return false
	}
	r := traffic.RatioFor(t.Traffic, s.ReplicaTotal)
	return s.StableReplicas == r.Stable && s.CandidateReplicas == r.Candidate &&
		(s.StableReady < s.StableReplicas || s.CandidateReady < s.CandidateReplicas)
}

// JobStatus is the state of a one-off job.
type JobStatus struct {
	Done      bool   `json:"done"`
	Succeeded bool   `json:"succeeded"`
	ExitCode  int    `json:"exitCode"`
	Message   string `json:"message,omitempty"`
	// Logs is the tail of the job's output.
	Logs string `json:"logs,omitempty"`
}

// Opener returns the driver for a plan's workloads. An unknown or
// unavailable driver is an error, never a fallback.
type Opener func(ctx context.Context, p *plan.Plan) (Driver, error)

// UsageReader is implemented by drivers that can read the CPU and memory
// their workloads use, as a guardrail's resources source measures them.
type UsageReader interface {
	// Usage returns what each running instance of side uses now, in no
	// particular order. A side with no running instance is an empty list,
	// not an error.
	Usage(ctx context.Context, side plan.Side) ([]Usage, error)
}

// Usage is what one instance of a side (a container, a pod) uses.
type Usage struct {
	// Instance names it: the container's or the pod's name.
	Instance string `json:"instance"`
	// CPU is the CPU time it used per second, in percent of its CPU limit.
	// Without a limit, Docker's driver counts the machine's CPUs and
	// Kubernetes' the containers' requests; with neither, Usage is an
	// error saying to set one.
	CPU float64 `json:"cpu"`
	// Memory is the memory it uses, without the page cache the kernel can
	// reclaim, in percent of its memory limit, with the same fallbacks.
	Memory float64 `json:"memory"`
}
