package store

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Open opens the store a DSN names, choosing the back end by its scheme:
//
//   - sqlite://PATH: a SQLite file. PATH is everything after "sqlite://",
//     taken verbatim (no percent-decoding): sqlite:///var/lib/hal9/state.db
//     is the absolute path /var/lib/hal9/state.db, sqlite://state.db is
//     state.db in the working directory.
//   - postgres://… or postgresql://…: a PostgreSQL database, the DSN passed
//     as it is to OpenPostgres.
//
// Any other scheme is an error. Errors never repeat the DSN, which may hold a
// password.
func Open(ctx context.Context, dsn string) (*SQL, error) {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return nil, fmt.Errorf("open store: DSN has no scheme; use sqlite://PATH, postgres://… or postgresql://…")
	}
	var (
		s   *SQL
		err error
	)
	switch strings.ToLower(scheme) {
	case "sqlite":
		if rest == "" {
			return nil, fmt.Errorf("open store: sqlite:// needs a path, as in sqlite:///var/lib/hal9-migrate/state.db")
		}
		s, err = OpenSQLite(ctx, rest)
	case "postgres", "postgresql":
		s, err = OpenPostgres(ctx, dsn)
	default:
		return nil, fmt.Errorf("open store: unknown scheme %q; use sqlite://PATH, postgres://… or postgresql://…", scheme)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Redact returns a DSN as it may be logged: its scheme and, for PostgreSQL,
// its host and database, never its password.
func Redact(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return "(a DSN without a scheme)"
	}
	if strings.EqualFold(scheme, "sqlite") {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil || rest == "" {
		return scheme + "://(unparsable)"
	}
	u.RawQuery = ""
	return u.Redacted()
}
