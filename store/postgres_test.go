package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, for the admin connection

	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/store/storetest"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// postgresDSNEnv names the variable holding the DSN of a PostgreSQL server
// the tests may create databases on; .ci/run starts one with
// scripts/postgres.sh and sets it.
const postgresDSNEnv = "HAL9_TEST_POSTGRES_DSN"

// postgresServer returns the DSN of the test server. Without one the test
// fails in CI and is skipped elsewhere.
func postgresServer(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(postgresDSNEnv)
	if dsn != "" {
		return dsn
	}
	const why = postgresDSNEnv + " is not set, so the PostgreSQL store is NOT TESTED; " +
		"start a server with `export " + postgresDSNEnv + `="$(scripts/postgres.sh)"` + "`"
	testenv.Missing(t, "%s", why)
	return ""
}

// postgresDatabase creates a database of its own for one test on the test
// server, drops it when the test ends, and returns its DSN.
func postgresDatabase(t testing.TB) string {
	t.Helper()
	server := postgresServer(t)
	admin, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatalf("connect to %s: %v", postgresDSNEnv, err)
	}
	t.Cleanup(func() { admin.Close() })
	b := make([]byte, 8)
	rand.Read(b)
	name := "hal9_test_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE: a test that failed may have left a store open.
		if _, err := admin.ExecContext(ctx, `DROP DATABASE `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return withDatabase(t, server, name)
}

// withDatabase is dsn naming database name instead.
func withDatabase(t testing.TB, dsn, name string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("%s is not a URL: %v", postgresDSNEnv, err)
		}
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name // keyword=value: the last one counts
}

func postgresBackend(t *testing.T) func(ctx context.Context) (store.Store, error) {
	dsn := postgresDatabase(t)
	return func(ctx context.Context) (store.Store, error) {
		s, err := store.OpenPostgres(ctx, dsn)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, postgresBackend)
}

func TestPostgresThroughOpen(t *testing.T) {
	dsn := postgresDatabase(t)
	for _, d := range []string{dsn, "postgresql" + strings.TrimPrefix(dsn, "postgres")} {
		s, err := store.Open(t.Context(), d)
		if err != nil {
			t.Fatalf("Open(%s): %v", d, err)
		}
		if _, err := s.Load(t.Context(), "p"); err != nil {
			t.Errorf("Open(%s): Load: %v", d, err)
		}
		s.Close()
	}
}
