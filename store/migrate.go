package store

import (
	"context"
	"database/sql"
	"fmt"
)

// A migration is one step of the store's own schema. Steps are applied in
// order, each once, and recorded in schema_migrations. Never change a step
// that has shipped: add a new one.
type migration struct {
	version int
	name    string
	// statements returns the step's SQL for a dialect, one statement each.
	statements func(d *dialect) []string
}

// migrations is the store's schema history; version i+1 is at index i.
var migrations = []migration{
	{1, "records and history", func(d *dialect) []string {
		return []string{
			`CREATE TABLE records (
				plan TEXT PRIMARY KEY,
				data TEXT NOT NULL,
				version BIGINT NOT NULL,
				updated_at ` + d.timestamp + ` NOT NULL DEFAULT CURRENT_TIMESTAMP
			)`,
			`CREATE TABLE history (
				seq ` + d.autoID + `,
				plan TEXT NOT NULL REFERENCES records (plan),
				at ` + d.timestamp + ` NOT NULL,
				kind TEXT NOT NULL,
				from_phase TEXT NOT NULL,
				from_percentage INTEGER NOT NULL,
				to_phase TEXT NOT NULL,
				to_percentage INTEGER NOT NULL,
				git_commit TEXT NOT NULL,
				reason TEXT NOT NULL,
				data ` + d.blob + `
			)`,
			`CREATE INDEX history_plan_seq ON history (plan, seq)`,
		}
	}},
	{2, "last good plans", func(d *dialect) []string {
		return []string{
			`CREATE TABLE plans (
				plan TEXT PRIMARY KEY,
				data TEXT NOT NULL,
				updated_at ` + d.timestamp + ` NOT NULL DEFAULT CURRENT_TIMESTAMP
			)`,
		}
	}},
}

// SchemaVersion is the version of the store's schema this binary writes.
func SchemaVersion() int { return len(migrations) }

// migrate applies the missing migrations in one transaction. It refuses a
// database whose schema is newer than this binary knows: an older binary
// would misread it, or write records a newer one cannot read.
func (s *SQL) migrate(ctx context.Context) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if s.d.lockMigrations != "" {
		if _, err := tx.ExecContext(ctx, s.d.lockMigrations); err != nil {
			return fmt.Errorf("migrate store: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at `+s.d.timestamp+` NOT NULL DEFAULT CURRENT_TIMESTAMP
	)`); err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	var current sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate store: read schema version: %w", err)
	}
	have, known := int(current.Int64), SchemaVersion()
	if have > known {
		return fmt.Errorf("store schema is at version %d, newer than version %d that this hal9-migrate knows: upgrade hal9-migrate", have, known)
	}
	for _, m := range migrations[have:] {
		for _, stmt := range m.statements(s.d) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate store to version %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO schema_migrations (version, name) VALUES (?, ?)`),
			m.version, m.name); err != nil {
			return fmt.Errorf("migrate store to version %d (%s): %w", m.version, m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	return nil
}
