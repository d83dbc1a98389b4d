package kubernetes

import (
	"context"
	"fmt"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// routers open the traffic router a plan's spec.driver.kubernetes.traffic
// names, by plan.KubernetesTraffic.Kind. A new router is a file that
// implements traffic.Router[workloads] and a line here.
var routers = map[string]func(d *Driver, t plan.KubernetesTraffic) traffic.Router[workloads]{
	"httpRoute": func(d *Driver, t plan.KubernetesTraffic) traffic.Router[workloads] {
		return &httpRouter{d: d}
	},
}

// openRouter returns the router of t, or the replica ratio without one.
func openRouter(d *Driver, t *plan.KubernetesTraffic) (traffic.Router[workloads], error) {
	if t == nil {
		return &traffic.ByReplicas[workloads]{
			Share:  ratioShare,
			Mirror: fmt.Errorf("%w by replica ratio: mirroring needs a route (spec.driver.kubernetes.traffic.httpRoute)", traffic.ErrCannotMirror),
		}, nil
	}
	open, ok := routers[t.Kind()]
	if !ok {
		return nil, fmt.Errorf("plan %s: no %q router in the kubernetes driver", d.plan, t.Kind())
	}
	return open(d, *t), nil
}

// httpRouter carries the split in the weights of a Gateway API HTTPRoute's
// rules, and mirrors with their RequestMirror filter.
type httpRouter struct{ d *Driver }

// Check accepts any split: an HTTPRoute can mirror.
func (r *httpRouter) Check(workloads, traffic.Split) error { return nil }

// Observe reads the split from the route's rules.
func (r *httpRouter) Observe(ctx context.Context, w workloads) (traffic.Split, error) {
	rt, err := r.d.getRoute(ctx)
	if err != nil {
		return traffic.Split{}, err
	}
	svc, err := r.d.services(ctx, rt, w)
	if err != nil {
		return traffic.Split{}, err
	}
	return readSplit(rt, svc)
}

// Route writes sp into the route.
func (r *httpRouter) Route(ctx context.Context, w workloads, sp traffic.Split) error {
	return r.d.applySplit(ctx, w, sp)
}
