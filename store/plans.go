package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// KeptPlan is the last good version of one plan that the daemon follows:
// the bytes of its file as they were read, and what the daemon knows of
// where they came from. A restarted daemon guards its migrations from
// these before Git answers, and a plan broken (or, in signed mode, not
// signed) at the branch head stays at this version.
type KeptPlan struct {
	Plan string `json:"plan"`
	// File is the plan's path in the repository; Data its content.
	File string `json:"file"`
	Data []byte `json:"data"`
	// Target, when set, overrides the file's spec.target (a position as
	// plan.ParsePosition reads it): the version followed is the file with
	// its target lowered by a commit that changed nothing else the daemon
	// would follow.
	Target string `json:"target,omitempty"`
	// Commit is the last commit of a person that changed the plan, Digest
	// the SHA-256 sum of the file's content now, and Own the sums of the
	// contents the daemon's own rollbacks wrote since: none of them is a
	// person's change.
	Commit  string    `json:"commit"`
	Digest  string    `json:"digest"`
	Own     []string  `json:"own,omitempty"`
	SavedAt time.Time `json:"savedAt"`
}

// SavePlan keeps kp as its plan's last good version, replacing the one
// kept before.
func (s *SQL) SavePlan(ctx context.Context, kp KeptPlan) error {
	if kp.Plan == "" {
		return errors.New("keep plan: empty plan name")
	}
	kp.SavedAt = instant(kp.SavedAt)
	data, err := json.Marshal(kp)
	if err != nil {
		return fmt.Errorf("keep plan %s: %w", kp.Plan, err)
	}
	_, err = s.db.ExecContext(ctx, s.d.rebind(`INSERT INTO plans (plan, data) VALUES (?, ?)
		ON CONFLICT (plan) DO UPDATE SET data = excluded.data, updated_at = CURRENT_TIMESTAMP`), kp.Plan, string(data))
	if err != nil {
		return fmt.Errorf("keep plan %s: %w", kp.Plan, err)
	}
	return nil
}

// SavePlans keeps each of kps as SavePlan does, in one transaction: a
// daemon's first sync of thousands of plans waits for one sync of the
// database to disk, not one per plan (10,000 plans: 18 s on SQLite with
// synchronous=FULL). Either every plan is kept or none.
func (s *SQL) SavePlans(ctx context.Context, kps []KeptPlan) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keep %d plans: %w", len(kps), err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stmt, err := tx.PrepareContext(ctx, s.d.rebind(`INSERT INTO plans (plan, data) VALUES (?, ?)
		ON CONFLICT (plan) DO UPDATE SET data = excluded.data, updated_at = CURRENT_TIMESTAMP`))
	if err != nil {
		return fmt.Errorf("keep %d plans: %w", len(kps), err)
	}
	defer stmt.Close()
	for _, kp := range kps {
		if kp.Plan == "" {
			return errors.New("keep plan: empty plan name")
		}
		kp.SavedAt = instant(kp.SavedAt)
		data, err := json.Marshal(kp)
		if err != nil {
			return fmt.Errorf("keep plan %s: %w", kp.Plan, err)
		}
		if _, err := stmt.ExecContext(ctx, kp.Plan, string(data)); err != nil {
			return fmt.Errorf("keep plan %s: %w", kp.Plan, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("keep %d plans: %w", len(kps), err)
	}
	return nil
}

// DeletePlan forgets the kept version of a plan that is gone from the
// repository; forgetting one never kept is no error.
func (s *SQL) DeletePlan(ctx context.Context, planName string) error {
	if _, err := s.db.ExecContext(ctx, s.d.rebind(`DELETE FROM plans WHERE plan = ?`), planName); err != nil {
		return fmt.Errorf("forget plan %s: %w", planName, err)
	}
	return nil
}

// LoadPlans returns every kept plan, sorted by name.
func (s *SQL) LoadPlans(ctx context.Context) ([]KeptPlan, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT plan, data FROM plans`)
	if err != nil {
		return nil, fmt.Errorf("load kept plans: %w", err)
	}
	defer rows.Close()
	var out []KeptPlan
	for rows.Next() {
		var name, data string
		if err := rows.Scan(&name, &data); err != nil {
			return nil, fmt.Errorf("load kept plans: %w", err)
		}
		var kp KeptPlan
		if err := json.Unmarshal([]byte(data), &kp); err != nil {
			return nil, fmt.Errorf("load kept plan %s: %w", name, err)
		}
		kp.Plan = name
		out = append(out, kp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load kept plans: %w", err)
	}
	slices.SortFunc(out, func(a, b KeptPlan) int { return strings.Compare(a.Plan, b.Plan) })
	return out, nil
}
