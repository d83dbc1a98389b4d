package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
)

// snapshot is what Snapshot records: the split on the route (when there is
// one), the replicas of both sides, the capacity and the flags.
type snapshot struct {
	Version        int            `json:"version"`
	Split          *split         `json:"split,omitempty"`
	Stable         int            `json:"stableReplicas"`
	Candidate      int            `json:"candidateReplicas"`
	Total          int            `json:"totalReplicas"`
	Decommissioned bool           `json:"decommissioned,omitempty"`
	Flags          map[string]int `json:"flags"`
}

const snapshotVersion = 1

// Snapshot records the split, the replicas and the flags as they are.
func (d *Driver) Snapshot(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.plan, err)
	}
	w, err := d.workloads(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.plan, err)
	}
	st := w.state()
	s := snapshot{
		Version: snapshotVersion, Stable: st.StableReplicas, Candidate: st.CandidateReplicas,
		Total: w.total(d.routed()), Decommissioned: st.Decommissioned,
	}
	if d.routed() {
		sp, err := d.router.Observe(ctx, w)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", d.plan, err)
		}
		s.Split = &sp
	}
	if s.Flags, err = d.readFlags(ctx); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.plan, err)
	}
	if s.Flags == nil {
		s.Flags = map[string]int{}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.plan, err)
	}
	d.event(ctx, w, ReasonCheckpointCreated, "took a checkpoint: "+describeSnapshot(s))
	return b, nil
}

// describeSnapshot says what a checkpoint holds.
func describeSnapshot(s snapshot) string {
	msg := fmt.Sprintf("stable %d replicas, candidate %d", s.Stable, s.Candidate)
	if s.Decommissioned {
		msg += ", stable decommissioned"
	}
	if s.Split != nil {
		msg += fmt.Sprintf(", %d%% of traffic and a %d%% mirror to the candidate", s.Split.Traffic, s.Split.Mirror)
	}
	return msg + "; feature flags " + describeFlags(s.Flags)
}

// Restore brings back what a Snapshot recorded: the replicas exactly as
// they were and the split, in the same safe order as Apply, and the flags.
func (d *Driver) Restore(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("restore %s: %w", d.plan, err)
	}
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("restore %s: not a kubernetes driver snapshot: %w", d.plan, err)
	}
	if s.Version != snapshotVersion {
		return fmt.Errorf("restore %s: snapshot version %d, want %d", d.plan, s.Version, snapshotVersion)
	}
	if (s.Split != nil) != d.routed() {
		return fmt.Errorf("restore %s: the snapshot was taken with a different traffic block", d.plan)
	}
	w, err := d.workloads(ctx)
	if err != nil {
		return fmt.Errorf("restore %s: %w", d.plan, err)
	}
	rs := replicas{Stable: s.Stable, Candidate: s.Candidate, Decommission: s.Decommissioned}
	var sp split
	if s.Split != nil {
		sp = *s.Split
	}
	if err := d.shift(ctx, w, rs, s.Total, sp); err != nil {
		return fmt.Errorf("restore %s: %w", d.plan, err)
	}
	// The restore's Event says what the flags are back to.
	if err := d.publishFlags(ctx, maps.Clone(s.Flags)); err != nil {
		return fmt.Errorf("restore %s: %w", d.plan, err)
	}
	d.setTolerance(s.Total)
	d.event(ctx, w, ReasonCheckpointRestored, "restored a checkpoint: "+describeSnapshot(s))
	return nil
}
