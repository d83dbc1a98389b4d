package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteTime is how SQLite keeps instants: text, in UTC, of fixed width so
// that text order is time order.
const sqliteTime = "2006-01-02T15:04:05.000000Z"

var sqliteDialect = &dialect{
	autoID:    "INTEGER PRIMARY KEY AUTOINCREMENT",
	blob:      "BLOB",
	timestamp: "TEXT",
	encodeTime: func(t time.Time) any {
		return t.UTC().Format(sqliteTime)
	},
	decodeTime: func(v any) (time.Time, error) {
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case []byte:
			s = string(v)
		case time.Time:
			return instant(v), nil
		default:
			return time.Time{}, fmt.Errorf("time stored as %T", v)
		}
		t, err := time.Parse(sqliteTime, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("time stored as %q: %w", s, err)
		}
		return t, nil
	},
}

// The store's SQLite settings.
//
// journal_mode=WAL (set once per file, by enableWAL): readers never block
// the writer or each other, and a commit appends to the log rather than
// rewriting pages in place, so a process killed mid-write leaves the last
// committed transaction intact.
//
// synchronous=FULL: WAL with NORMAL already survives a killed process; FULL
// also fsyncs the log at every commit, so a commit survives power loss and
// kernel crashes too. The record must not move back in time under the
// daemon (a forgotten failed position could be re-entered, a finished soak
// counted again), and the daemon saves a few times a minute, so the fsync
// per save (see docs/BENCHMARKS.md) costs nothing that matters.
//
// busy_timeout: another process (a second daemon by mistake, or a command
// reading the file) may hold the lock; wait for it rather than fail at once.
//
// foreign_keys: history rows must belong to a record; SQLite checks that
// only when asked to.
const sqliteBusyTimeout = "busy_timeout(10000)"

// sqlitePragmas are set on every connection of the store.
var sqlitePragmas = []string{sqliteBusyTimeout, "synchronous(FULL)", "foreign_keys(1)"}

// OpenSQLite opens, creating it if needed, the SQLite database at path and
// brings its schema up to date. The directory must exist.
//
// The store uses a single connection: the daemon's load is a few statements
// a minute, and one connection means its own writers queue in database/sql
// instead of failing with SQLITE_BUSY. Write transactions begin IMMEDIATE,
// taking the write lock at BEGIN, so a writer in another process waits
// (busy_timeout) instead of failing when it would upgrade a read lock.
func OpenSQLite(ctx context.Context, path string) (*SQL, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite store: empty path")
	}
	if err := enableWAL(ctx, path); err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", sqliteDSN(path, sqlitePragmas))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	s, err := newSQL(ctx, db, sqliteDialect)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return s, nil
}

// enableWAL switches the database at path to WAL, once, before the store's
// connections open it. Switching needs the database to itself, and SQLite
// answers SQLITE_BUSY at once, without waiting out busy_timeout, when two
// connections switch a new file together (two processes starting on one
// new file); so the switch is retried here. WAL is then a property of the
// file, and every later connection finds it set without taking a lock.
func enableWAL(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", sqliteDSN(path, []string{sqliteBusyTimeout}))
	if err != nil {
		return err
	}
	defer db.Close()
	wait := 5 * time.Millisecond
	for deadline := time.Now().Add(10 * time.Second); ; {
		var mode string
		err := db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode)
		var se *sqlite.Error
		if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY && time.Now().Before(deadline) {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			wait = min(2*wait, 200*time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("set journal mode: %w", err)
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("journal mode is %s, not wal (is the file on a file system without shared memory?)", mode)
		}
		return nil
	}
}

// sqliteDSN is the driver's name for the database at path, with pragmas set
// on every connection. It is a file: URI so that a path holding ? or # is
// still a path.
func sqliteDSN(path string, pragmas []string) string {
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(filepath.Clean(path)))
	var q strings.Builder
	for _, p := range pragmas {
		q.WriteString("&_pragma=" + p)
	}
	return "file:" + escaped + "?_txlock=immediate" + q.String()
}
