package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/internal/k8stest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// TestDaemonPartsSharding checks the daemon's sharding parts against the
// test API server: the loop runs beside this replica's shards, which it
// takes all of alone and is told of, named after the pod; and a Docker
// plan is refused, saying why.
func TestDaemonPartsSharding(t *testing.T) {
	cfg := k8stest.Env(t)
	ns := k8stest.Namespace(t, cfg)
	t.Setenv("POD_NAME", "hal9-migrate-0")
	c := daemon.DefaultConfig()
	c.Kubernetes.Kubeconfig = k8stest.Kubeconfig(t)
	c.Kubernetes.LeaderElection.Enabled = false
	c.Kubernetes.Sharding = daemon.ShardingConfig{Enabled: true, Shards: 4, Namespace: ns, Name: "hal9-migrate",
		LeaseDuration: 3 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond}
	c.Timeouts.Step = time.Second
	c.DataDir = t.TempDir()
	parts, err := openParts(t.Context(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer parts.close()
	if parts.shards == nil || parts.shards.Identity() != "hal9-migrate-0" {
		t.Fatalf("shards %+v, want hal9-migrate-0's", parts.shards)
	}
	acquired := make(chan int, 4)
	parts.shardAcquired = func(i int) { acquired <- i }

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = parts.run(ctx, func(ctx context.Context) error {
		for range 4 {
			select {
			case <-acquired:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !parts.shards.Owns("shop") || parts.shards.Owner("shop") != "hal9-migrate-0" {
			t.Errorf("alone, the replica does not own shop (owner %q)", parts.shards.Owner("shop"))
		}
		cancel()
		return nil
	})
	if err != nil {
		t.Errorf("run: %v", err)
	}

	p := &plan.Plan{Metadata: plan.Metadata{Name: "shop"}, Spec: plan.Spec{Driver: plan.Driver{Docker: &plan.DockerDriver{
		Stable: plan.DockerWorkload{Service: "shop"}, Candidate: plan.DockerWorkload{Service: "shop-v2"},
	}}}}
	if _, err := parts.open(t.Context(), p); err == nil || !strings.Contains(err.Error(), "kubernetes.sharding") {
		t.Errorf("a Docker plan under sharding: %v", err)
	}
}
