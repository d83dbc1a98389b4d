package helm_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/daemon"
)

// TestTemplateSharding: with sharding.enabled the chart runs the replicas
// asked for, tells the daemon kubernetes.sharding (its Leases named after
// the release) and grants the Leases of its namespace; with leader
// election too it refuses.
func TestTemplateSharding(t *testing.T) {
	objs := docs(t, render(t, "prod", "ops",
		"--set", "replicas=3,leaderElection.enabled=false,sharding.enabled=true,sharding.shards=8",
		"--set", "config.repo=https://git.example.com/plans.git"))
	if r := get(one(t, objs, "Deployment", "prod-hal9-migrate"), "spec", "replicas"); r != 3 {
		t.Errorf("replicas %v", r)
	}
	role := one(t, objs, "Role", "prod-hal9-migrate-sharding")
	if v := get(role, "rules", 0, "verbs"); v == nil || len(v.([]any)) != 5 {
		t.Errorf("the sharding Role's verbs: %v", v)
	}
	one(t, objs, "RoleBinding", "prod-hal9-migrate-sharding")
	text := get(one(t, objs, "ConfigMap", "prod-hal9-migrate-config"), "data", "config.yaml").(string)
	var cfg daemon.Config
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("config.yaml: %v\n%s", err, text)
	}
	sh := cfg.Kubernetes.Sharding
	if !sh.Enabled || sh.Shards != 8 || sh.Name != "prod-hal9-migrate" || sh.LeaseDuration.String() != "2m30s" || cfg.Kubernetes.LeaderElection.Enabled {
		t.Errorf("kubernetes: %+v\n%s", cfg.Kubernetes, text)
	}
	if out, err := helm(t, "template", "x", chart, "--set", "sharding.enabled=true"); err == nil || !strings.Contains(err.Error()+string(out), "choose one") {
		t.Errorf("leader election and sharding together: %v\n%s", err, out)
	}
}
