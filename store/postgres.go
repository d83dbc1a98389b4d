package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// migrationLockID names the advisory lock that serialises migrations of one
// PostgreSQL database: daemon replicas starting together migrate it once.
// The value is arbitrary; it only has to be the same in every binary.
const migrationLockID = 0x68616c396d696772 // "hal9migr"

var postgresDialect = &dialect{
	dollar:         true,
	autoID:         "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
	blob:           "BYTEA",
	timestamp:      "TIMESTAMPTZ",
	lockMigrations: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", migrationLockID),
	encodeTime:     func(t time.Time) any { return t.UTC() },
	decodeTime: func(v any) (time.Time, error) {
		t, ok := v.(time.Time)
		if !ok {
			return time.Time{}, fmt.Errorf("time stored as %T", v)
		}
		return instant(t), nil
	},
}

// OpenPostgres connects to the PostgreSQL database named by dsn (a URL,
// postgres://user:password@host:port/database?sslmode=…, or keyword=value
// pairs, as libpq takes them) and brings the store's schema up to date. Any
// number of daemons may share one database: Save lets exactly one of two
// concurrent writers of a record win.
func OpenPostgres(ctx context.Context, dsn string) (*SQL, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx leaves the password out of its parse errors.
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	where := fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s, err := newSQL(ctx, db, postgresDialect)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	return s, nil
}
