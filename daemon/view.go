package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// Migration is one plan as the daemon's API and status page show it: where
// it is, where it is going, the whole timeline, the guardrails' latest
// readings and what happened lately.
type Migration struct {
	Name       string `json:"name" yaml:"name"`
	File       string `json:"file" yaml:"file"`
	StatusBody `yaml:",inline"`
	Position   plan.Position  `json:"position" yaml:"position"`
	TargetPos  plan.Position  `json:"targetPosition" yaml:"targetPosition"`
	Pending    *plan.Position `json:"pending,omitempty" yaml:"pending,omitempty"`
	// Progress is the share, 0..1, of the plan's timeline behind the
	// current position.
	Progress float64        `json:"progress" yaml:"progress"`
	Timeline []TimelineStep `json:"timeline" yaml:"timeline"`
	// Guardrails are the readings of the latest evaluation, empty before
	// the first or at start (nothing is evaluated without traffic).
	Guardrails []reconcile.Reading `json:"guardrails" yaml:"guardrails"`
	Driver     *drivers.State      `json:"driver,omitempty" yaml:"driver,omitempty"`
	DriverErr  string              `json:"driverError,omitempty" yaml:"driverError,omitempty"`
	// Decision is the latest decision: what the daemon does next and why.
	Decision *Decision `json:"decision,omitempty" yaml:"decision,omitempty"`
	// Decided is when that decision was made.
	Decided time.Time `json:"decided,omitzero" yaml:"decided,omitempty"`
	// Owner is the replica that steps the plan, when replicas share the
	// plans (kubernetes.sharding): as this replica last saw its shard's
	// Lease, "" while nobody holds it.
	Owner string `json:"owner,omitempty" yaml:"owner,omitempty"`
}

// TimelineStep is a step of the plan with where the migration stands to it:
// done, current, next (the step the daemon moves to), planned (before the
// target), beyond (after the target: waits for a commit) or failed (under
// the plan's current commit: not entered again until a newer one).
type TimelineStep struct {
	plan.Step
	State string
}

// MarshalJSON writes the step's fields and its state in one object.
func (s TimelineStep) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(s.Step)
	if err != nil {
		return nil, err
	}
	state, _ := json.Marshal(s.State)
	return append(append(append(b[:len(b)-1:len(b)-1], `,"state":`...), state...), '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *TimelineStep) UnmarshalJSON(b []byte) error {
	var st struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	s.State = st.State
	return json.Unmarshal(b, &s.Step)
}

// MarshalYAML writes the step's fields and its state in one mapping.
func (s TimelineStep) MarshalYAML() (any, error) {
	v, err := s.Step.MarshalYAML()
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "state"}, &yaml.Node{Kind: yaml.ScalarNode, Value: s.State})
	return &n, nil
}

// Decision is the action last decided for a plan.
type Decision struct {
	Kind   string        `json:"kind" yaml:"kind"`
	Reason string        `json:"reason" yaml:"reason"`
	To     plan.Position `json:"to,omitzero" yaml:"to,omitempty"`
	Until  time.Time     `json:"until,omitzero" yaml:"until,omitempty"`
	// Gates are the gates the next move waits on, judged, open or not.
	Gates []reconcile.GateState `json:"gates,omitempty" yaml:"gates,omitempty"`
}

// view is what the daemon keeps of a plan's latest decision.
type view struct {
	at        time.Time
	readings  []reconcile.Reading
	driver    drivers.State
	driverErr error
	action    reconcile.Action
}

// onDecided keeps the latest decision of a plan for the API; it runs on the
// runner's workers and must not block.
func (d *Daemon) onDecided(ds *reconcile.Desired, o reconcile.Observed, a reconcile.Action) {
	v := view{at: d.Clock.Now(), readings: o.Guardrails, driver: o.Driver, driverErr: o.DriverErr, action: a}
	d.mu.Lock()
	if d.views == nil {
		d.views = map[string]view{}
	}
	d.views[ds.Plan.Metadata.Name] = v
	d.mu.Unlock()
	if d.Metrics != nil {
		d.Metrics.ObserveGuardrails(ds.Plan.Metadata.Name, o.Guardrails)
	}
}

// Migrations returns every followed plan as the API shows it, sorted by
// name; history holds up to historyLen events of each, newest first.
func (d *Daemon) Migrations(ctx context.Context, historyLen int) ([]Migration, error) {
	d.init()
	desired := d.snapshot()
	out := make([]Migration, 0, len(desired))
	for _, ds := range desired {
		m, err := d.migration(ctx, ds, historyLen)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Migration) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// Migration returns one plan by name; ok is false when no followed plan
// has that name.
func (d *Daemon) Migration(ctx context.Context, name string, historyLen int) (Migration, bool, error) {
	d.init()
	for _, ds := range d.snapshot() {
		if ds.Plan.Metadata.Name == name {
			m, err := d.migration(ctx, ds, historyLen)
			return m, err == nil, err
		}
	}
	return Migration{}, false, nil
}

func (d *Daemon) migration(ctx context.Context, ds *reconcile.Desired, historyLen int) (Migration, error) {
	p := ds.Plan
	name := p.Metadata.Name
	rec, err := d.Store.Load(ctx, name)
	if err != nil {
		return Migration{}, fmt.Errorf("load the record of %s: %w", name, err)
	}
	history, err := d.Store.History(ctx, name, historyLen)
	if err != nil {
		return Migration{}, fmt.Errorf("load the history of %s: %w", name, err)
	}
	d.mu.Lock()
	st := d.statusOf(ds, rec, history)
	v, seen := d.views[name]
	d.mu.Unlock()

	m := Migration{Name: name, File: p.File, StatusBody: st.Status, Position: rec.Position, TargetPos: ds.Target, Pending: rec.Pending}
	m.Timeline, m.Progress = timelineOf(p, ds.Target, ds.Commit, rec)
	if seen {
		m.Guardrails = v.readings
		m.Decided = v.at
		if v.driverErr != nil {
			m.DriverErr = v.driverErr.Error()
		} else {
			drv := v.driver
			m.Driver = &drv
		}
		m.Decision = &Decision{Kind: string(v.action.Kind), Reason: v.action.Reason, To: v.action.To, Until: v.action.Until, Gates: v.action.Gates}
	}
	if m.Guardrails == nil {
		m.Guardrails = []reconcile.Reading{}
	}
	if d.Shards != nil {
		m.Owner = d.Shards.Owner(ShardKey(p))
	}
	return m, nil
}

// timelineOf marks each step of the plan's whole timeline against the
// record and the plan's current commit, and the progress through it.
func timelineOf(p *plan.Plan, target plan.Position, commit string, rec store.Record) ([]TimelineStep, float64) {
	steps := p.Timeline(plan.Last)
	out := make([]TimelineStep, len(steps))
	// Only a failure under the current commit keeps the daemon out of a
	// position; one under an older commit is allowed again, and the step
	// shows what it is now (next, planned), its failure staying in the
	// status's list of failed positions.
	failed := map[plan.Position]bool{}
	for _, f := range rec.Failed {
		if f.Commit == commit {
			failed[f.Position] = true
		}
	}
	current := -1
	nextSet := false
	for i, s := range steps {
		state := "planned"
		switch c := p.Compare(s.Position, rec.Position); {
		case c < 0:
			state = "done"
		case c == 0 && !rec.Position.IsStart():
			state, current = "current", i
		case p.Compare(s.Position, target) > 0:
			state = "beyond"
		case !nextSet:
			state, nextSet = "next", true
		}
		if failed[s.Position] && state != "done" && state != "current" {
			state = "failed"
		}
		out[i] = TimelineStep{Step: s, State: state}
	}
	if len(steps) == 0 {
		return out, 0
	}
	return out, float64(current+1) / float64(len(steps))
}

// Checkpoints returns the checkpoints recorded for a plan, oldest first,
// with their snapshots; found is false when no followed plan has that name.
func (d *Daemon) Checkpoints(ctx context.Context, name string) ([]store.Checkpoint, bool, error) {
	d.init()
	for _, ds := range d.snapshot() {
		if ds.Plan.Metadata.Name != name {
			continue
		}
		rec, err := d.Store.Load(ctx, name)
		if err != nil {
			return nil, true, fmt.Errorf("load the record of %s: %w", name, err)
		}
		cps := make([]store.Checkpoint, 0, len(rec.Checkpoints))
		for _, cp := range rec.Checkpoints {
			cps = append(cps, cp)
		}
		slices.SortFunc(cps, func(a, b store.Checkpoint) int { return a.At.Compare(b.At) })
		return cps, true, nil
	}
	return nil, false, nil
}

// Checkpoint takes a named snapshot of a plan's workloads now.
func (d *Daemon) Checkpoint(ctx context.Context, name, checkpoint, description string) (store.Checkpoint, bool, error) {
	d.init()
	for _, ds := range d.snapshot() {
		if ds.Plan.Metadata.Name == name {
			cp, err := d.Runner.Checkpoint(ctx, ds, checkpoint, description)
			return cp, true, err
		}
	}
	return store.Checkpoint{}, false, nil
}
