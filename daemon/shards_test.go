package daemon

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// switchShards owns every key while on is set: the daemon's side of
// leader.Shards, whose Leases leader's tests cover on a real API server.
type switchShards struct {
	on    atomic.Bool
	holds atomic.Int64
}

func (s *switchShards) ShardOf(string) int { return 0 }
func (s *switchShards) Owns(string) bool   { return s.on.Load() }
func (s *switchShards) Owner(key string) string {
	if s.on.Load() {
		return "replica-a"
	}
	return "replica-b"
}

func (s *switchShards) Hold(ctx context.Context, key string) (context.Context, func(), bool) {
	if !s.on.Load() {
		return ctx, func() {}, false
	}
	s.holds.Add(1)
	return ctx, func() {}, true
}

// TestShardsStepOnlyOwnedPlans: a replica steps, and writes the status
// file of, only the plans of the shards it holds; the API names the
// owner; a shard taken makes its plans start from the store.
func TestShardsStepOnlyOwnedPlans(t *testing.T) {
	r := newRig(t)
	sh := &switchShards{}
	r.d.Shards = sh
	ctx := context.Background()
	for range 3 {
		if err := r.d.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if rec, _ := r.store.Load(ctx, "base"); rec.Version != 0 || len(r.fake.Driver("base").Applied()) != 0 {
		t.Fatalf("a plan of another replica's shard was stepped: %+v", rec)
	}
	if files := gittest.Git(t, r.remote, "ls-tree", "-r", "--name-only", "main"); strings.Contains(files, "status/") {
		t.Fatalf("a status file of another replica's plan was written:\n%s", files)
	}
	m, ok, err := r.d.Migration(ctx, "base", 0)
	if err != nil || !ok || m.Owner != "replica-b" {
		t.Fatalf("Migration = %+v, %v, %v; want owner replica-b", m.Owner, ok, err)
	}

	sh.on.Store(true)
	r.d.ShardAcquired(0)
	r.until(t, 50, func(rec store.Record) bool { return rec.Version > 0 })
	if sh.holds.Load() == 0 {
		t.Error("the plan was stepped without a hold of its shard")
	}
	if err := r.d.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if files := gittest.Git(t, r.remote, "ls-tree", "-r", "--name-only", "main"); !strings.Contains(files, "status/base.yaml") {
		t.Errorf("the owner did not write the plan's status file:\n%s", files)
	}
}

// TestShardKeyGroups: the members of a lockstep group share one key, so
// one replica steps them together; a plan alone is keyed by its name.
func TestShardKeyGroups(t *testing.T) {
	member := func(name, group string) *plan.Plan {
		p := &plan.Plan{}
		p.Metadata.Name, p.Spec.Group = name, group
		return p
	}
	if a, b := ShardKey(member("pay-eu", "payments")), ShardKey(member("pay-us", "payments")); a != b {
		t.Errorf("two members of one group: keys %q and %q", a, b)
	}
	if k := ShardKey(member("shop", "")); k != "shop" {
		t.Errorf("a plan alone: key %q", k)
	}
	if ShardKey(member("payments", "")) == ShardKey(member("x", "payments")) {
		t.Error("a plan named like a group shares its key")
	}
}
