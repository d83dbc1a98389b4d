package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
)

// TestDaemonConfigLayers checks where each setting comes from: a flag beats
// its environment variable, which beats the config file, which beats the
// default.
func TestDaemonConfigLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte("repo: file:///plans\npoll: 3m\ninterval: 20s\nbranch: from-file\nprometheus: {url: 'http://prom:9090'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HAL9_MIGRATE_INTERVAL", "7s")
	t.Setenv("HAL9_MIGRATE_BRANCH", "from-env")
	cmd := newDaemonCmd()
	if err := cmd.ParseFlags([]string{"--config", file, "--branch", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.PreRunE(cmd, nil); err != nil {
		t.Fatal(err)
	}
	var cfg daemon.Config
	// The command keeps its configuration in the flags' variables: read
	// them back through the flags.
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	cfg.Repo, cfg.Branch = get("repo"), get("branch")
	poll, _ := time.ParseDuration(get("poll"))
	interval, _ := time.ParseDuration(get("interval"))
	if cfg.Repo != "file:///plans" || cfg.Branch != "from-flag" || poll != 3*time.Minute || interval != 7*time.Second ||
		get("prometheus") != "http://prom:9090" || get("path") != "plans" {
		t.Errorf("repo %s branch %s poll %s interval %s prometheus %s path %s", cfg.Repo, cfg.Branch, poll, interval, get("prometheus"), get("path"))
	}

	// A bad environment value names its variable; a missing repository is
	// a usage error.
	t.Setenv("HAL9_MIGRATE_POLL", "soon")
	cmd = newDaemonCmd()
	_ = cmd.ParseFlags([]string{"--repo", "x"})
	if err := cmd.PreRunE(cmd, nil); err == nil || !strings.Contains(err.Error(), "HAL9_MIGRATE_POLL") {
		t.Errorf("bad env: %v", err)
	}
	os.Unsetenv("HAL9_MIGRATE_POLL")
	t.Setenv("HAL9_MIGRATE_BRANCH", "")
	cmd = newDaemonCmd()
	_ = cmd.ParseFlags(nil)
	if err := cmd.PreRunE(cmd, nil); err == nil || !strings.Contains(err.Error(), "no plan repository") {
		t.Errorf("no repo: %v", err)
	}
}
