package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// TestPostgresScriptSideBySide starts two throwaway servers with
// scripts/postgres.sh, as two checkouts' `make test` do at once: each gets
// a port of its own, keeps it when started again, and answers on it.
func TestPostgresScriptSideBySide(t *testing.T) {
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres"); len(m) == 0 {
		testenv.Missing(t, "no PostgreSQL server is installed (apt-get install postgresql), so scripts/postgres.sh is NOT TESTED")
	}
	script, err := filepath.Abs("../scripts/postgres.sh")
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: run as root, the script runs the server as the
	// postgres user, who must reach the directories; and a unix socket's
	// path must stay short.
	parent, err := os.MkdirTemp("", "hal9-pg-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	pg := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(script, args...)
		cmd.Env = append(os.Environ(), "HAL9_PG_DIR="+filepath.Join(parent, dir), "HAL9_PG_PORT=")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("HAL9_PG_DIR=%s postgres.sh %v: %v\n%s", dir, args, err, stderr.String())
		}
		return string(bytes.TrimSpace(out))
	}
	ping := func(dsn string) {
		t.Helper()
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			t.Errorf("%s: %v", dsn, err)
		}
	}
	port := func(dsn string) string {
		t.Helper()
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return u.Port()
	}

	t.Cleanup(func() { pg("a", "stop") })
	a := pg("a", "start")
	t.Cleanup(func() { pg("b", "stop") })
	b := pg("b", "start")
	if port(a) == port(b) {
		t.Fatalf("both servers on port %s", port(a))
	}
	ping(a)
	ping(b)
	if got := pg("a", "dsn"); got != a {
		t.Errorf("dsn of a = %s, want %s", got, a)
	}
	// Started again, a server keeps its port, so its DSN stays the same.
	pg("a", "stop")
	if got := pg("a", "start"); got != a {
		t.Errorf("a started again at %s, want %s", got, a)
	}
	ping(a)
}
