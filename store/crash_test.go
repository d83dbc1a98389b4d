package store_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// crashChildEnv, set to a database path, turns the test binary into
// crashChild (see TestMain).
const crashChildEnv = "HAL9_STORE_CRASH_CHILD"

const (
	crashPlan      = "crash"
	eventsPerSave  = 3
	crashEventSize = 16 << 10 // makes each transaction write several pages
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

// crashChild saves the crash plan's record over and over, with
// eventsPerSave events each time, until it is killed. Save n writes reason
// "save n" in the record and in each of its events. It prints "saving" once
// its first save is committed.
func crashChild(path string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	s, err := store.OpenSQLite(ctx, path)
	if err != nil {
		fail(err)
	}
	rec, err := s.Load(ctx, crashPlan)
	if err != nil {
		fail(err)
	}
	data := []byte(`"` + strings.Repeat("x", crashEventSize) + `"`)
	for first := true; ; first = false {
		n := int(rec.Version) + 1
		rec.Reason = fmt.Sprintf("save %d", n)
		rec.Position = plan.Position{Phase: "canary", Percentage: n % 101}
		events := make([]store.Event, eventsPerSave)
		for i := range events {
			events[i] = store.Event{At: time.Now(), Kind: "Saved", Reason: rec.Reason, Data: data}
		}
		if rec.Version, err = s.Save(ctx, rec, events...); err != nil {
			fail(err)
		}
		if first {
			fmt.Println("saving")
		}
	}
}

// TestSQLiteSurvivesKill kills a process in the middle of saving, several
// times, and checks that the database opens with the last committed record
// and exactly its history.
func TestSQLiteSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	var last int64
	for kill := range 6 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "saving\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: the child did not start saving: %q, %v", kill, line, err)
		}
		time.Sleep(time.Duration(rand.IntN(40_000)) * time.Microsecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("kill %d: the child ended with %v, not killed", kill, err)
		}

		checkIntegrity(t, path)
		s, err := store.OpenSQLite(t.Context(), path)
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", kill, err)
		}
		rec, err := s.Load(t.Context(), crashPlan)
		if err != nil {
			t.Fatalf("kill %d: Load: %v", kill, err)
		}
		history, err := s.History(t.Context(), crashPlan, 0)
		if err != nil {
			t.Fatalf("kill %d: History: %v", kill, err)
		}
		s.Close()
		t.Logf("kill %d: killed at version %d", kill, rec.Version)
		if rec.Version <= last {
			t.Errorf("kill %d: version %d, not after the %d of the last run", kill, rec.Version, last)
		}
		last = rec.Version
		if want := fmt.Sprintf("save %d", rec.Version); rec.Reason != want {
			t.Errorf("kill %d: record at version %d has reason %q, want %q", kill, rec.Version, rec.Reason, want)
		}
		if len(history) != int(rec.Version)*eventsPerSave {
			t.Fatalf("kill %d: record at version %d, but %d events; want %d",
				kill, rec.Version, len(history), int(rec.Version)*eventsPerSave)
		}
		for i, ev := range history {
			if want := fmt.Sprintf("save %d", i/eventsPerSave+1); ev.Reason != want || len(ev.Data) != crashEventSize+2 {
				t.Fatalf("kill %d: event %d has reason %q and %d bytes of data, want %q and %d",
					kill, i, ev.Reason, len(ev.Data), want, crashEventSize+2)
			}
		}
	}
}

func checkIntegrity(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ok string
	if err := db.QueryRowContext(t.Context(), `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check after a kill: %q, %v", ok, err)
	}
}
