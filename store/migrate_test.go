package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/hal9ai/hal9-migrate/store"
)

// migrationBackend opens a store on one fresh database, and that database
// directly, with the back end's driver.
type migrationBackend struct {
	open func(ctx context.Context) (store.Store, error)
	raw  func() (*sql.DB, error)
	// placeholder is the first query parameter's.
	placeholder string
}

func testMigrations(t *testing.T, newBackend func(t *testing.T) migrationBackend) {
	t.Run("FromEmpty", func(t *testing.T) {
		b := newBackend(t)
		db := mustRaw(t, b)
		s, err := b.open(t.Context())
		if err != nil {
			t.Fatalf("open an empty database: %v", err)
		}
		s.Close()
		applied := migrationsApplied(t, db)
		if len(applied) != store.SchemaVersion() {
			t.Fatalf("schema_migrations = %v, want versions 1 to %d", applied, store.SchemaVersion())
		}
		for i, m := range applied {
			if m.version != i+1 {
				t.Errorf("schema_migrations row %d is version %d, want %d", i, m.version, i+1)
			}
		}
		for _, table := range []string{"records", "history"} {
			var n int
			if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
				t.Errorf("table %s after migrating: %v", table, err)
			}
		}

		// Opening again changes nothing.
		s, err = b.open(t.Context())
		if err != nil {
			t.Fatalf("open a migrated database: %v", err)
		}
		s.Close()
		if again := migrationsApplied(t, db); !reflect.DeepEqual(again, applied) {
			t.Errorf("reopening changed schema_migrations from %v to %v", applied, again)
		}
	})

	t.Run("Newer", func(t *testing.T) {
		b := newBackend(t)
		db := mustRaw(t, b)
		s, err := b.open(t.Context())
		if err != nil {
			t.Fatalf("open an empty database: %v", err)
		}
		s.Close()
		newer := store.SchemaVersion() + 41
		if _, err := db.ExecContext(t.Context(),
			`INSERT INTO schema_migrations (version, name) VALUES (`+b.placeholder+`, 'from the future')`, newer); err != nil {
			t.Fatalf("mark the database newer: %v", err)
		}
		s, err = b.open(t.Context())
		if err == nil {
			s.Close()
			t.Fatalf("opened a database at schema version %d; want an error", newer)
		}
		for _, want := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("version %d", store.SchemaVersion())} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("opening a newer database: %v; want it to name %q", err, want)
			}
		}
		if got := migrationsApplied(t, db); len(got) != store.SchemaVersion()+1 {
			t.Errorf("refusing a newer database changed schema_migrations to %v", got)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		b := newBackend(t)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				s, err := b.open(t.Context())
				if err == nil {
					s.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("open %d of 4 at once: %v", i, err)
			}
		}
		if got := migrationsApplied(t, mustRaw(t, b)); len(got) != store.SchemaVersion() {
			t.Errorf("after opening 4 at once, schema_migrations = %v", got)
		}
	})
}

type applied struct {
	version int
	name    string
	at      any
}

func migrationsApplied(t *testing.T, db *sql.DB) []applied {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var out []applied
	for rows.Next() {
		var a applied
		if err := rows.Scan(&a.version, &a.name, &a.at); err != nil {
			t.Fatalf("read schema_migrations: %v", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return out
}

func mustRaw(t *testing.T, b migrationBackend) *sql.DB {
	t.Helper()
	db, err := b.raw()
	if err != nil {
		t.Fatalf("open the database directly: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSQLiteMigrations(t *testing.T) {
	testMigrations(t, func(t *testing.T) migrationBackend {
		path := filepath.Join(t.TempDir(), "state.db")
		return migrationBackend{
			open: func(ctx context.Context) (store.Store, error) { return store.Open(ctx, "sqlite://"+path) },
			raw: func() (*sql.DB, error) {
				return sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			},
			placeholder: "?",
		}
	})
}

func TestPostgresMigrations(t *testing.T) {
	testMigrations(t, func(t *testing.T) migrationBackend {
		dsn := postgresDatabase(t)
		return migrationBackend{
			open:        func(ctx context.Context) (store.Store, error) { return store.Open(ctx, dsn) },
			raw:         func() (*sql.DB, error) { return sql.Open("pgx", dsn) },
			placeholder: "$1",
		}
	})
}
