package daemon

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(`repo: ssh://git@git.example.com/platform/plans.git
poll: 2m
git:
  sshKeyFile: /etc/hal9-migrate/id_ed25519
  knownHostsFile: /etc/hal9-migrate/known_hosts
prometheus:
  url: http://prometheus:9090
  bearerTokenFile: /var/run/secrets/prom-token
api: {verifyTimeout: 2h}
kubernetes:
  namespaces: [hal9, shop]
  leaderElection: {enabled: true, namespace: hal9}
  clusters:
    prod: {kubeconfig: /etc/hal9-migrate/prod.kubeconfig}
    staging: {kubeconfig: /etc/hal9-migrate/clusters.kubeconfig, context: staging-admin}
    eu: {context: eu-west}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Poll != 2*time.Minute || cfg.Interval != 30*time.Second || cfg.Branch != "main" {
		t.Errorf("poll %s interval %s branch %s", cfg.Poll, cfg.Interval, cfg.Branch)
	}
	le := cfg.Kubernetes.LeaderElection
	if !le.Enabled || le.Namespace != "hal9" || le.Name != "hal9-migrate" || le.LeaseDuration != 15*time.Second {
		t.Errorf("leader election %+v", le)
	}
	if ns := cfg.Kubernetes.Namespaces; len(ns) != 2 || ns[0] != "hal9" || ns[1] != "shop" || cfg.API.VerifyTimeout != 2*time.Hour {
		t.Errorf("namespaces %q verify timeout %s", ns, cfg.API.VerifyTimeout)
	}
	wantClusters := map[string]ClusterConfig{
		"prod":    {Kubeconfig: "/etc/hal9-migrate/prod.kubeconfig"},
		"staging": {Kubeconfig: "/etc/hal9-migrate/clusters.kubeconfig", Context: "staging-admin"},
		"eu":      {Context: "eu-west"},
	}
	if !maps.Equal(cfg.Kubernetes.Clusters, wantClusters) || !slices.Equal(cfg.Kubernetes.ClusterNames(), []string{"eu", "prod", "staging"}) {
		t.Errorf("clusters %+v (names %q), want %+v", cfg.Kubernetes.Clusters, cfg.Kubernetes.ClusterNames(), wantClusters)
	}
	if cfg.Prometheus.URL != "http://prometheus:9090" || cfg.Git.KnownHostsFile == "" {
		t.Errorf("%+v", cfg)
	}
	if err := cfg.Check(); err != nil {
		t.Error(err)
	}
	if got := cfg.StateDSN(); got != "sqlite://"+filepath.Join("hal9-migrate-data", "state.db") {
		t.Errorf("state DSN %s", got)
	}

	// A misspelt key is an error naming its line, not ignored.
	if err := os.WriteFile(path, []byte("repo: x\npol: 2m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(path, DefaultConfig())
	if err == nil || !strings.Contains(err.Error(), "line 2: field pol not found") {
		t.Errorf("misspelt key: %v", err)
	}
	if err := os.WriteFile(path, []byte("kubernetes:\n  clusters:\n    prod: {kubconfig: /etc/prod}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = LoadConfig(path, DefaultConfig()); err == nil || !strings.Contains(err.Error(), "line 3: field kubconfig not found") {
		t.Errorf("misspelt key of a cluster: %v", err)
	}
	if err := os.WriteFile(path, []byte("poll: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = LoadConfig(path, DefaultConfig()); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad duration: %v", err)
	}

	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Repo = "" }, "no plan repository"},
		{func(c *Config) { c.Poll = 0 }, "poll: 0s is not a positive duration"},
		{func(c *Config) { c.Log.Level = "loud" }, `log.level: "loud"`},
		{func(c *Config) { c.State, c.DataDir = "", "" }, "no store"},
		{func(c *Config) { c.API.VerifyTimeout = -time.Second }, "api.verifyTimeout: -1s is negative"},
		{func(c *Config) { c.Kubernetes.Namespaces = []string{"Shop"} }, `kubernetes.namespaces: "Shop" is not a namespace name`},
		{func(c *Config) { c.Kubernetes.Namespaces = []string{"a", "b", "a"} }, `kubernetes.namespaces: "a" is listed twice`},
		{func(c *Config) { c.Kubernetes.Clusters = map[string]ClusterConfig{"Prod_1": {Context: "prod"}} },
			`kubernetes.clusters: "Prod_1" is not a cluster name (a DNS-1123 label, as plans name it in spec.driver.kubernetes.cluster)`},
		{func(c *Config) { c.Kubernetes.Clusters = map[string]ClusterConfig{"": {Context: "prod"}} }, `kubernetes.clusters: "" is not a cluster name`},
		{func(c *Config) { c.Kubernetes.Clusters = map[string]ClusterConfig{"a": {Context: "a"}, "b": {}} },
			"kubernetes.clusters.b: set kubeconfig, context or both"},
	} {
		cfg := DefaultConfig()
		cfg.Repo = "x"
		c.edit(&cfg)
		if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check: %v, want %q", err, c.want)
		}
	}
}

// TestPlansConfig checks the plans: section: the limits a config file
// sets, the defaults it leaves alone, and the values Check refuses.
func TestPlansConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(`repo: x
plans:
  maxFileSize: 2MiB
  maxTotalSize: 67108864
  cueTimeout: 10s
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := plan.Limits{MaxFileSize: 2 << 20, MaxTotalSize: 64 << 20, MaxNodes: 100_000, CUETimeout: 10 * time.Second, CUEMemory: 256 << 20}
	if cfg.Plans != want {
		t.Errorf("plans: %+v, want %+v", cfg.Plans, want)
	}
	if err := cfg.Check(); err != nil {
		t.Error(err)
	}

	if err := os.WriteFile(path, []byte("plans:\n  cueMemory: 1GB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path, DefaultConfig()); err == nil || !strings.Contains(err.Error(), `line 2: invalid size "1GB"`) {
		t.Errorf("a decimal unit: %v", err)
	}
	for _, c := range []struct {
		edit func(*plan.Limits)
		want string
	}{
		{func(l *plan.Limits) { l.MaxNodes = -1 }, "plans.maxNodes: -1 is not a positive number"},
		{func(l *plan.Limits) { l.MaxTotalSize = 1 << 10 }, "plans.maxTotalSize: 1 KiB is less than plans.maxFileSize (1 MiB)"},
		{func(l *plan.Limits) { l.CUEMemory = 1 << 20 }, "plans.cueMemory: 1 MiB is less than the 16 MiB an evaluation needs"},
	} {
		cfg := DefaultConfig()
		cfg.Repo = "x"
		c.edit(&cfg.Plans)
		if err := cfg.Check(); err == nil || err.Error() != c.want {
			t.Errorf("Check: %v, want %q", err, c.want)
		}
	}
}

func TestSecret(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Secret("HAL9_TEST_SECRET_UNSET", file); err != nil || s != "from-file" {
		t.Errorf("from file: %q %v", s, err)
	}
	t.Setenv("HAL9_TEST_SECRET", "from-env")
	if s, err := Secret("HAL9_TEST_SECRET", file); err != nil || s != "from-env" {
		t.Errorf("from env: %q %v", s, err)
	}
	if s, err := Secret("HAL9_TEST_SECRET_UNSET", ""); err != nil || s != "" {
		t.Errorf("unset: %q %v", s, err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	if _, err := Secret("HAL9_TEST_SECRET_UNSET", empty); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty file: %v", err)
	}
}
