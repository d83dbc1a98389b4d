// Package store keeps the durable record of every migration: where it is,
// since when, which commit it applied, which positions failed, the
// checkpoints taken, and the history of every action with its reason. The
// reconciler writes the record before and after each change it makes, so a
// daemon killed at any instant resumes from here.
//
// Two implementations pass one conformance suite (storetest): SQLite, a file,
// the embedded default; and PostgreSQL, for several daemon replicas. The
// package stores what it is given; it makes no decisions.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
)

// ErrConflict is returned by Save when the record changed since it was
// loaded (another writer got there first).
var ErrConflict = errors.New("record changed since it was loaded")

// Store is the durable record of all migrations.
type Store interface {
	// Load returns the record of a plan. A plan never seen before has a
	// zero Record with Plan set and Version 0.
	Load(ctx context.Context, planName string) (Record, error)
	// LoadAll returns the records of every plan, sorted by plan name.
	LoadAll(ctx context.Context) ([]Record, error)
	// Save writes rec and appends events to the plan's history in one
	// transaction. It fails with ErrConflict unless rec.Version is the
	// version last loaded or saved; on success the stored version is
	// rec.Version+1, which Save returns. A failed Save writes nothing.
	//
	// Events belong to rec.Plan: an event with no Plan gets it, one naming
	// another plan is an error. The store assigns Seq. Times are stored in
	// UTC to the microsecond (PostgreSQL's precision), and read back so.
	Save(ctx context.Context, rec Record, events ...Event) (version int64, err error)
	// History returns the newest events of a plan, oldest first; limit <= 0
	// means all of them.
	History(ctx context.Context, planName string, limit int) ([]Event, error)
	// Close releases the store.
	Close() error
}

// Record is where one migration is and what the reconciler knows about it.
type Record struct {
	Plan string `json:"plan"`
	// Version counts saves; Save uses it to refuse lost updates.
	Version int64 `json:"version"`

	// Position is the last position applied in full. Pending, when set, is
	// a position the reconciler decided to move to and may or may not have
	// applied yet: after a crash it is applied again.
	Position plan.Position  `json:"position"`
	Pending  *plan.Position `json:"pending,omitempty"`
	// EnteredAt is when Position was applied: soaks count from here.
	EnteredAt time.Time `json:"enteredAt"`
	// GreenSince is since when every guardrail has been healthy without a
	// break at this position; zero when not green now.
	GreenSince time.Time `json:"greenSince"`
	// Commit is the commit whose target the reconciler is following.
	Commit string `json:"commit,omitempty"`
	// Status is a word for people and dashboards: Progressing, Holding,
	// RolledBack, Frozen, Failed, Completed.
	Status string `json:"status,omitempty"`
	// Reason says why the record is as it is, in a sentence.
	Reason string `json:"reason,omitempty"`

	// Failed lists positions that failed (a breach, a failed job or check)
	// and the commit they failed under: the reconciler does not enter them
	// again until a newer commit.
	Failed []Failure `json:"failed,omitempty"`
	// Checkpoints are the snapshots taken, by name.
	Checkpoints map[string]Checkpoint `json:"checkpoints,omitempty"`
	// Job is the run phase job of the current position, if any.
	Job *Job `json:"job,omitempty"`
	// Checks are the results of verify checks run at the current position.
	Checks map[string]CheckResult `json:"checks,omitempty"`
	// Flags are the feature flags last published.
	Flags map[string]int `json:"flags,omitempty"`
	// NoReturn is the step of the last irreversible phase completed: the
	// migration does not move back past it without a forced rollback.
	NoReturn *plan.Position `json:"noReturn,omitempty"`
	// Reached is the migration's climb to Position: the positions it
	// entered on its way up, each with when, oldest first. A move back
	// cuts it to the positions at or below the one moved to, so the first
	// entry at or above a position says since when the migration has held
	// that position without a break: gates on this plan read it.
	Reached []Reached `json:"reached,omitempty"`
	// Decommissioned is set once stable has been scaled to zero.
	Decommissioned bool `json:"decommissioned,omitempty"`
	// UpdatedAt is when the record was last saved.
	UpdatedAt time.Time `json:"updatedAt"`
}

// Reached is a position a migration entered on its climb, and when.
type Reached struct {
	Position plan.Position `json:"position" yaml:"position"`
	At       time.Time     `json:"at" yaml:"at"`
}

// Failure is a position that failed under a commit.
type Failure struct {
	Position plan.Position `json:"position"`
	Commit   string        `json:"commit"`
	Reason   string        `json:"reason"`
	At       time.Time     `json:"at"`
}

// Checkpoint is a named snapshot of the observed state, taken before a
// phase; Data is the driver's own encoding.
type Checkpoint struct {
	Name     string        `json:"name"`
	Position plan.Position `json:"position"`
	At       time.Time     `json:"at"`
	// Description says why an operator took it (`state checkpoint -d`);
	// empty for the checkpoints a plan's phases take.
	Description string `json:"description,omitempty"`
	// Data is the driver's snapshot of the workloads; empty when the
	// driver keeps none (the checkpoint then holds the position and flags).
	Data []byte `json:"data,omitempty"`
	// Flags are the feature flags published when it was taken; `state
	// restore` writes them back into the plan.
	Flags map[string]int `json:"flags,omitempty"`
	// RestoredAt is when the snapshot was last restored; a restore asked
	// for by an annotation left in the plan happens once per snapshot.
	RestoredAt time.Time `json:"restoredAt,omitzero"`
}

// Restored reports whether this snapshot has been restored since it was
// taken.
func (c Checkpoint) Restored() bool { return !c.RestoredAt.IsZero() && !c.RestoredAt.Before(c.At) }

// Job is a run phase's job.
type Job struct {
	ID        string    `json:"id"`
	Phase     string    `json:"phase"`
	StartedAt time.Time `json:"startedAt"`
	Done      bool      `json:"done,omitempty"`
	Succeeded bool      `json:"succeeded,omitempty"`
	Message   string    `json:"message,omitempty"`
	Logs      string    `json:"logs,omitempty"`
}

// CheckResult is the outcome of one verify check. A check run as a job is
// Pending, with its JobID, until the job ends.
type CheckResult struct {
	Pending bool      `json:"pending,omitempty"`
	JobID   string    `json:"jobId,omitempty"`
	Passed  bool      `json:"passed"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
}

// Event is one entry of a plan's history: an action the reconciler took,
// with its reason.
type Event struct {
	// Seq orders events; the store assigns it.
	Seq    int64         `json:"seq"`
	Plan   string        `json:"plan"`
	At     time.Time     `json:"at"`
	Kind   string        `json:"kind"`
	From   plan.Position `json:"from"`
	To     plan.Position `json:"to"`
	Commit string        `json:"commit,omitempty"`
	Reason string        `json:"reason"`
	// Data holds details of the kind (a guardrail's value and bound, a
	// job's logs) as JSON.
	Data []byte `json:"data,omitempty"`
}
