package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// run runs the command line in-process and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(""))
	_, err := cmd.ExecuteC()
	return out.String(), err
}

// TestState takes a checkpoint through a live daemon, lists and exports it,
// moves on, and restores it by a commit the daemon acts on.
func TestState(t *testing.T) {
	l := liveDaemon(t, "t0ken")
	t.Setenv("HAL9_MIGRATE_DAEMON", l.url)
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "")
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)

	if out, err := run(t, "state", "checkpoint", "-n", "before-25"); err == nil || !strings.Contains(err.Error(), "API token") {
		t.Fatalf("checkpoint without a token: %v\n%s", err, out)
	}
	t.Setenv("HAL9_MIGRATE_API_TOKEN", "t0ken")
	out, err := run(t, "state", "checkpoint", "-n", "before-25", "-d", "all green at 10%")
	if err != nil || out != "checkpoint before-25 of base taken at canary 10%\n" {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	out, err = run(t, "state", "list")
	if err != nil || !strings.Contains(out, "pre-canary") || !strings.Contains(out, "before-25") || !strings.Contains(out, "all green at 10%") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	file := filepath.Join(t.TempDir(), "export.json")
	if out, err := run(t, "state", "export", "-o", file); err != nil || !strings.Contains(out, "wrote 2 checkpoints of base") {
		t.Fatalf("export: %v\n%s", err, out)
	}
	var doc export
	b, _ := os.ReadFile(file)
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Checkpoints) != 2 || len(doc.Checkpoints[1].Data) == 0 {
		t.Fatalf("export file: %v\n%s", err, b)
	}

	// Move on to 25% by a commit, then restore the checkpoint.
	work := gittest.Clone(t, l.remote)
	gittest.Git(t, work, "config", "user.name", "Ada")
	gittest.Git(t, work, "config", "user.email", "ada@example.com")
	if out, err := run(t, "migrate", "--repo", work, "--phase", "canary", "--percentage", "25", "--push", "--yes"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	l.until(t, func(rec store.Record) bool { return rec.Position == plan.Position{Phase: "canary", Percentage: 25} })

	gittest.Git(t, work, "pull", "-q", "--rebase") // the daemon's status commits
	if out, err := run(t, "state", "restore", "-c", "nope", "--repo", work, "--push", "--yes"); err == nil || !strings.Contains(err.Error(), `no checkpoint named \"nope\"`) && !strings.Contains(err.Error(), `no checkpoint named "nope"`) {
		t.Fatalf("restore of an unknown checkpoint: %v\n%s", err, out)
	}
	out, err = run(t, "state", "restore", "-c", "before-25", "--repo", work, "--push", "--yes")
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if msg := gittest.Git(t, work, "log", "-1", "--format=%s"); msg != "restore(base): canary 25% → canary 10%, checkpoint before-25" {
		t.Errorf("commit subject %q", msg)
	}
	data, _ := os.ReadFile(filepath.Join(work, "plans", "shop.yaml"))
	if !strings.Contains(string(data), plan.RestoreCheckpointAnnotation+": before-25") {
		t.Errorf("no annotation:\n%s", data)
	}
	l.until(t, func(rec store.Record) bool { return rec.Position == plan.Position{Phase: "canary", Percentage: 10} })
	history, _ := l.store.History(t.Context(), "base", 5)
	found := false
	for _, e := range history {
		found = found || strings.Contains(e.Reason, "restoring checkpoint before-25")
	}
	if !found {
		t.Errorf("no restore in the history: %+v", history)
	}
}
