package store_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/store"
)

func TestOpenSQLitePaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	odd := filepath.Join(dir, "a dir?#%20")
	if err := os.Mkdir(odd, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dsn, file string }{
		{"sqlite://" + filepath.Join(dir, "abs.db"), filepath.Join(dir, "abs.db")},
		{"sqlite://relative.db", filepath.Join(dir, "relative.db")},
		{"SQLite://upper.db", filepath.Join(dir, "upper.db")},
		{"sqlite://" + filepath.Join(odd, "state.db"), filepath.Join(odd, "state.db")},
	} {
		s, err := store.Open(t.Context(), c.dsn)
		if err != nil {
			t.Errorf("Open(%q): %v", c.dsn, err)
			continue
		}
		v, err := s.Save(t.Context(), store.Record{Plan: "p"})
		if err != nil || v != 1 {
			t.Errorf("Open(%q): Save = %d, %v", c.dsn, v, err)
		}
		s.Close()
		if _, err := os.Stat(c.file); err != nil {
			t.Errorf("Open(%q) did not write %s: %v", c.dsn, c.file, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // nothing here may get as far as connecting
	for _, c := range []struct{ dsn, want string }{
		{"mysql://root:secret@localhost/db", `unknown scheme "mysql"; use sqlite://PATH, postgres://… or postgresql://…`},
		{"/var/lib/state.db", "DSN has no scheme"},
		{"sqlite://", "sqlite:// needs a path"},
		{"postgres://user:hunter2@127.0.0.1:1/db?sslmode=bogus", "open postgres store"},
		{"sqlite://" + filepath.Join(t.TempDir(), "missing", "state.db"), "open sqlite store"},
	} {
		s, err := store.Open(ctx, c.dsn)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", c.dsn)
			continue
		}
		if s != nil {
			t.Errorf("Open(%q) returned a non-nil Store with its error", c.dsn)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", c.dsn, err, c.want)
		}
		if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) = %v: the error shows the password", c.dsn, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for dsn, want := range map[string]string{
		"sqlite:///var/lib/state.db":                          "sqlite:///var/lib/state.db",
		"postgres://hal9:s3cret@db:5432/hal9?sslmode=disable": "postgres://hal9:xxxxx@db:5432/hal9",
		"postgresql://db/hal9?password=s3cret":                "postgresql://db/hal9",
		"nonsense":                                            "(a DSN without a scheme)",
	} {
		if got := store.Redact(dsn); got != want {
			t.Errorf("store.Redact(%q) = %q, want %q", dsn, got, want)
		}
	}
}
