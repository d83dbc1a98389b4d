package kubernetes

import (
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

var _ traffic.Router[workloads] = (*gatewayRouter[*gatewayv1.GRPCRoute])(nil)

// grpcRouteRouter carries the split by the weights of the GRPCRoute name in
// the driver's namespace, and mirrors with its RequestMirror filter.
func grpcRouteRouter(d *Driver, name string) *gatewayRouter[*gatewayv1.GRPCRoute] {
	return &gatewayRouter[*gatewayv1.GRPCRoute]{
		reader: d.read, ns: d.ns, name: name, kind: "GRPCRoute",
		cached: d.read.grpcRoute,
		client: d.gw.GatewayV1().GRPCRoutes(d.ns),
		read: func(r *gatewayv1.GRPCRoute) *routeObject {
			return grpcRules.object(r.ObjectMeta, r.Spec.Rules)
		},
	}
}

// grpcRules converts a GRPCRoute's rules.
var grpcRules = ruleKind[gatewayv1.GRPCRouteRule, gatewayv1.GRPCBackendRef, gatewayv1.GRPCRouteFilter]{
	copy: func(r *gatewayv1.GRPCRouteRule) gatewayv1.GRPCRouteRule { return *r.DeepCopy() },
	parts: func(r *gatewayv1.GRPCRouteRule) (*[]gatewayv1.GRPCBackendRef, *[]gatewayv1.GRPCRouteFilter) {
		return &r.BackendRefs, &r.Filters
	},
	ref: func(b *gatewayv1.GRPCBackendRef) *gatewayv1.BackendRef { return &b.BackendRef },
	mirror: func(f *gatewayv1.GRPCRouteFilter) *gatewayv1.HTTPRequestMirrorFilter {
		if f.Type != gatewayv1.GRPCRouteFilterRequestMirror {
			return nil
		}
		return f.RequestMirror
	},
	mirrorFilter: func(m *gatewayv1.HTTPRequestMirrorFilter) gatewayv1.GRPCRouteFilter {
		return gatewayv1.GRPCRouteFilter{Type: gatewayv1.GRPCRouteFilterRequestMirror, RequestMirror: m}
	},
}
