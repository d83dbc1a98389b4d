package docker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hal9ai/hal9-migrate/drivers"
)

// snapshot is what Snapshot records: the split, the replica counts and the
// flags.
type snapshot struct {
	Version           int            `json:"version"`
	Traffic           int            `json:"traffic"`
	Mirror            int            `json:"mirror"`
	Decommissioned    bool           `json:"decommissioned,omitempty"`
	StableReplicas    int            `json:"stableReplicas"`
	CandidateReplicas int            `json:"candidateReplicas"`
	Flags             map[string]int `json:"flags"`
}

// Snapshot records the split, the replica counts and the flags as observed.
func (d *Driver) Snapshot(ctx context.Context) ([]byte, error) {
	st, err := d.Observe(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	b, err := json.Marshal(snapshot{
		Version: 1, Traffic: st.Traffic, Mirror: st.Mirror, Decommissioned: st.Decommissioned,
		StableReplicas: st.StableReplicas, CandidateReplicas: st.CandidateReplicas, Flags: st.Flags,
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", d.plan, err)
	}
	return b, nil
}

// Restore brings back a snapshot: the replica counts, the split and the
// flags. A snapshot without flags restores none.
func (d *Driver) Restore(ctx context.Context, b []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("restore %s: %w", d.plan, err)
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("restore %s: the snapshot is not one this driver took: %w", d.plan, err)
	}
	if s.Version != 1 {
		return fmt.Errorf("restore %s: snapshot version %d, want 1", d.plan, s.Version)
	}
	t := drivers.Target{Traffic: s.Traffic, Mirror: s.Mirror, Decommission: s.Decommissioned}
	want := &counts{stable: s.StableReplicas, candidate: s.CandidateReplicas}
	if err := d.apply(ctx, t, want); err != nil {
		return fmt.Errorf("restore %s: %w", d.plan, err)
	}
	if d.flagsPath != "" {
		flags := s.Flags
		if flags == nil {
			flags = map[string]int{}
		}
		if err := d.PublishFlags(ctx, flags); err != nil {
			return fmt.Errorf("restore %s: %w", d.plan, err)
		}
	}
	return nil
}
