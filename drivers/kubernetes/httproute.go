package kubernetes

import (
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

var _ traffic.Router[workloads] = (*gatewayRouter[*gatewayv1.HTTPRoute])(nil)

// httpRouteRouter carries the split by the weights of the HTTPRoute name in
// the driver's namespace, and mirrors with its RequestMirror filter.
func httpRouteRouter(d *Driver, name string) *gatewayRouter[*gatewayv1.HTTPRoute] {
	return &gatewayRouter[*gatewayv1.HTTPRoute]{
		reader: d.read, ns: d.ns, name: name, kind: "HTTPRoute",
		cached: d.read.httpRoute,
		client: d.gw.GatewayV1().HTTPRoutes(d.ns),
		read: func(r *gatewayv1.HTTPRoute) *routeObject {
			return httpRules.object(r.ObjectMeta, r.Spec.Rules)
		},
	}
}

// httpRules converts an HTTPRoute's rules.
var httpRules = ruleKind[gatewayv1.HTTPRouteRule, gatewayv1.HTTPBackendRef, gatewayv1.HTTPRouteFilter]{
	copy: func(r *gatewayv1.HTTPRouteRule) gatewayv1.HTTPRouteRule { return *r.DeepCopy() },
	parts: func(r *gatewayv1.HTTPRouteRule) (*[]gatewayv1.HTTPBackendRef, *[]gatewayv1.HTTPRouteFilter) {
		return &r.BackendRefs, &r.Filters
	},
	ref: func(b *gatewayv1.HTTPBackendRef) *gatewayv1.BackendRef { return &b.BackendRef },
	mirror: func(f *gatewayv1.HTTPRouteFilter) *gatewayv1.HTTPRequestMirrorFilter {
		if f.Type != gatewayv1.HTTPRouteFilterRequestMirror {
			return nil
		}
		return f.RequestMirror
	},
	mirrorFilter: func(m *gatewayv1.HTTPRequestMirrorFilter) gatewayv1.HTTPRouteFilter {
		return gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: m}
	},
}
