package daemon

import (
	"strings"
	"testing"
	"time"
)

func TestShardingConfig(t *testing.T) {
	base := DefaultConfig()
	base.Repo = "file:///plans"
	base.State = "postgres://hal9@db/hal9"
	base.Kubernetes.Sharding.Enabled = true
	if err := base.Check(); err != nil {
		t.Fatalf("the sharding defaults with the default timeouts: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"with leader election", func(c *Config) { c.Kubernetes.LeaderElection.Enabled = true }, "choose one"},
		{"with a Docker host", func(c *Config) { c.Docker.Host = "unix:///var/run/docker.sock" }, "Docker driver"},
		{"on SQLite", func(c *Config) { c.State = "" }, "postgres://"},
		{"no shards", func(c *Config) { c.Kubernetes.Sharding.Shards = 0 }, "shards: 0"},
		{"a bad name", func(c *Config) { c.Kubernetes.Sharding.Name = "Hal9" }, "kubernetes.sharding.name"},
		{"a step longer than the lease allows", func(c *Config) { c.Timeouts.Step = 130 * time.Second }, "timeouts.step"},
		{"retry not shorter than renew", func(c *Config) { c.Kubernetes.Sharding.RetryPeriod = c.Kubernetes.Sharding.RenewDeadline }, "retryPeriod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			err := c.Check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	off := base
	off.Kubernetes.Sharding.Enabled = false
	off.State = ""
	off.Timeouts.Step = time.Hour
	if err := off.Check(); err != nil {
		t.Errorf("sharding disabled: its settings are not checked, got %v", err)
	}
}
