package daemon

import (
	"context"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// Sharder is this replica's share of the plans when several replicas share
// them (leader.Shards): a plan belongs to the shard of its key (ShardKey),
// and a replica steps, and writes back to Git, only the plans of the
// shards it holds.
type Sharder interface {
	// ShardOf is the shard of a key.
	ShardOf(key string) int
	// Owns reports whether this replica may work on key's plans now.
	Owns(key string) bool
	// Owner names the replica that holds key's shard, "" when none does.
	Owner(key string) string
	// Hold starts work on key's plans: the work runs under the context
	// returned and calls done when it has ended; ok false: not this
	// replica's now.
	Hold(ctx context.Context, key string) (hctx context.Context, done func(), ok bool)
}

// ShardKey is what places a plan on a shard: its lockstep group, so that a
// group's members are stepped together by one replica, else its name.
func ShardKey(p *plan.Plan) string {
	if g := p.Spec.Group; g != "" {
		return "group/" + g
	}
	return p.Metadata.Name
}

// owns reports whether this replica steps and writes back p: always
// without shards.
func (d *Daemon) owns(p *plan.Plan) bool {
	return d.Shards == nil || d.Shards.Owns(ShardKey(p))
}

// owned keeps the plans of desired this replica owns.
func (d *Daemon) owned(desired []*reconcile.Desired) []*reconcile.Desired {
	if d.Shards == nil {
		return desired
	}
	var out []*reconcile.Desired
	for _, ds := range desired {
		if d.owns(ds.Plan) {
			out = append(out, ds)
		}
	}
	return out
}

// holdUnit is the runner's Hold: a unit (a plan, or a group whose members
// share one key) is stepped under a hold of its shard.
func (d *Daemon) holdUnit(ctx context.Context, ds []*reconcile.Desired) (context.Context, func(), bool) {
	return d.Shards.Hold(ctx, ShardKey(ds[0].Plan))
}

// ShardAcquired is told of a shard this replica has taken, before any of
// its plans is stepped: another replica may have moved them meanwhile, so
// their next steps start from the store, and their status files are
// written again from it.
func (d *Daemon) ShardAcquired(shard int) {
	d.init()
	d.mu.Lock()
	keys := map[string]string{}
	for _, ds := range d.desired {
		keys[ds.Plan.Metadata.Name] = ShardKey(ds.Plan)
	}
	mine := func(name string) bool {
		key, ok := keys[name]
		if !ok {
			key = name
		}
		return d.Shards.ShardOf(key) == shard
	}
	for name := range d.written {
		if mine(name) {
			delete(d.written, name)
		}
	}
	d.mu.Unlock()
	if d.Runner != nil {
		d.Runner.ForgetPlans(mine)
	}
}

// ShardsChanged is told when this replica's shards changed: the plans of
// a shard taken are stepped at once.
func (d *Daemon) ShardsChanged() {
	d.init()
	d.wakeEveryPlan()
}
