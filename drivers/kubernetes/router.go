package kubernetes

import (
	"fmt"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// routers open the traffic router a plan's spec.driver.kubernetes.traffic
// names, by plan.KubernetesTraffic.Kind. A new router is a file that
// implements traffic.Router[workloads] and a line here.
var routers = map[string]func(d *Driver, t plan.KubernetesTraffic) traffic.Router[workloads]{
	"httpRoute": func(d *Driver, t plan.KubernetesTraffic) traffic.Router[workloads] {
		return httpRouteRouter(d, t.HTTPRoute)
	},
	"grpcRoute": func(d *Driver, t plan.KubernetesTraffic) traffic.Router[workloads] {
		return grpcRouteRouter(d, t.GRPCRoute)
	},
}

// openRouter returns the router of t, or the replica ratio without one.
func openRouter(d *Driver, t *plan.KubernetesTraffic) (traffic.Router[workloads], error) {
	if t == nil {
		return &traffic.ByReplicas[workloads]{
			Share:  ratioShare,
			Mirror: fmt.Errorf("%w by replica ratio: mirroring needs an HTTPRoute or a GRPCRoute (spec.driver.kubernetes.traffic)", traffic.ErrCannotMirror),
		}, nil
	}
	open, ok := routers[t.Kind()]
	if !ok {
		return nil, fmt.Errorf("plan %s: no %q router in the kubernetes driver", d.plan, t.Kind())
	}
	return open(d, *t), nil
}
