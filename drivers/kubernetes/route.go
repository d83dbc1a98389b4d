package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

// split is the share of live and of mirrored requests the candidate gets.
type split = traffic.Split

func parseSplit(v string) (split, bool) {
	var s split
	ok := 0
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(val)
		if err != nil {
			return split{}, false
		}
		switch k {
		case "traffic":
			s.Traffic, ok = n, ok+1
		case "mirror":
			s.Mirror, ok = n, ok+1
		}
	}
	return s, ok == 2
}

// routeServices are the Services that front the two Deployments in the
// route, with the port to send the candidate.
type routeServices struct {
	stable, candidate *corev1.Service
}

func (d *Driver) getRoute(ctx context.Context) (*gatewayv1.HTTPRoute, error) {
	r, err := d.gw.GatewayV1().HTTPRoutes(d.ns).Get(ctx, d.route, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("httproute %s/%s not found", d.ns, d.route)
	}
	if err != nil {
		return nil, fmt.Errorf("get httproute %s/%s: %w", d.ns, d.route, err)
	}
	return r, nil
}

// services finds the Service of each Deployment: one whose selector picks
// the Deployment's pods and not the other's. Among several, one the route
// already names wins, then one named like the Deployment.
func (d *Driver) services(ctx context.Context, r *gatewayv1.HTTPRoute, w workloads) (routeServices, error) {
	list, err := d.kube.CoreV1().Services(d.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return routeServices{}, fmt.Errorf("list services in %s: %w", d.ns, err)
	}
	named := map[string]bool{}
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			if isLocalService(b.BackendObjectReference, d.ns) {
				named[string(b.Name)] = true
			}
		}
	}
	stable, err := serviceOf(list.Items, w.stable, w.candidate, named)
	if err != nil {
		return routeServices{}, err
	}
	candidate, err := serviceOf(list.Items, w.candidate, w.stable, named)
	if err != nil {
		return routeServices{}, err
	}
	return routeServices{stable: stable, candidate: candidate}, nil
}

func serviceOf(svcs []corev1.Service, x, other deployment, named map[string]bool) (*corev1.Service, error) {
	own := labels.Set(x.Spec.Template.Labels)
	theirs := labels.Set(other.Spec.Template.Labels)
	var fit []*corev1.Service
	for i := range svcs {
		sel := svcs[i].Spec.Selector
		if len(sel) == 0 {
			continue
		}
		s := labels.SelectorFromSet(sel)
		if s.Matches(own) && !s.Matches(theirs) {
			fit = append(fit, &svcs[i])
		}
	}
	pick := func(ok func(*corev1.Service) bool) []*corev1.Service {
		var out []*corev1.Service
		for _, s := range fit {
			if ok(s) {
				out = append(out, s)
			}
		}
		return out
	}
	for _, narrowed := range [][]*corev1.Service{
		fit,
		pick(func(s *corev1.Service) bool { return named[s.Name] }),
		pick(func(s *corev1.Service) bool { return s.Name == x.Name }),
	} {
		if len(narrowed) == 1 {
			return narrowed[0], nil
		}
	}
	if len(fit) == 0 {
		return nil, fmt.Errorf("no Service in %s selects the pods of deployment %s and not those of %s", x.Namespace, x.Name, other.Name)
	}
	names := make([]string, len(fit))
	for i, s := range fit {
		names[i] = s.Name
	}
	return nil, fmt.Errorf("several Services select the pods of deployment %s/%s (%s); name one in the route, or name it like the Deployment", x.Namespace, x.Name, strings.Join(names, ", "))
}

func isLocalService(b gatewayv1.BackendObjectReference, ns string) bool {
	if b.Group != nil && *b.Group != "" && *b.Group != "core" {
		return false
	}
	if b.Kind != nil && *b.Kind != "Service" {
		return false
	}
	return b.Namespace == nil || string(*b.Namespace) == ns
}

func refersTo(b gatewayv1.BackendObjectReference, svc *corev1.Service) bool {
	return isLocalService(b, svc.Namespace) && string(b.Name) == svc.Name
}

// ruleSplit reads the split of one rule, and whether the rule routes to
// either side at all.
func ruleSplit(rule gatewayv1.HTTPRouteRule, svc routeServices) (split, bool) {
	var sw, cw int
	found := false
	for _, b := range rule.BackendRefs {
		w := 1 // the Gateway API default weight
		if b.Weight != nil {
			w = int(*b.Weight)
		}
		switch {
		case refersTo(b.BackendObjectReference, svc.stable):
			sw, found = sw+w, true
		case refersTo(b.BackendObjectReference, svc.candidate):
			cw, found = cw+w, true
		}
	}
	if !found {
		return split{}, false
	}
	s := split{Traffic: share(cw, sw+cw)}
	for _, f := range rule.Filters {
		if f.Type != gatewayv1.HTTPRouteFilterRequestMirror || f.RequestMirror == nil ||
			!refersTo(f.RequestMirror.BackendRef, svc.candidate) {
			continue
		}
		m := f.RequestMirror
		switch {
		case m.Percent != nil:
			s.Mirror = int(*m.Percent)
		case m.Fraction != nil:
			den := 100
			if m.Fraction.Denominator != nil {
				den = int(*m.Fraction.Denominator)
			}
			s.Mirror = share(int(m.Fraction.Numerator), den)
		default:
			s.Mirror = 100
		}
	}
	return s, true
}

// readSplit reads the split from the rules that route to the two sides.
// When they disagree (someone edited one), it reports the one farthest
// from the split last applied, so that the reconciler sees the drift.
func readSplit(r *gatewayv1.HTTPRoute, svc routeServices) (split, error) {
	var splits []split
	for _, rule := range r.Spec.Rules {
		if s, ok := ruleSplit(rule, svc); ok {
			splits = append(splits, s)
		}
	}
	if len(splits) == 0 {
		return split{}, nil
	}
	out := splits[0]
	if last, ok := parseSplit(r.Annotations[AnnotationSplit]); ok {
		far := -1
		for _, s := range splits {
			if dist := abs(s.Traffic-last.Traffic) + abs(s.Mirror-last.Mirror); dist > far {
				out, far = s, dist
			}
		}
	}
	return out, nil
}

// withSplit returns the rules with sp brought about in every rule that
// routes to either side (or, if none does, the first rule): the stable and
// candidate backends weighted 100-traffic and traffic, added if missing,
// and a RequestMirror filter to the candidate when mirroring. Other
// backends and filters are kept as they are.
func withSplit(rules []gatewayv1.HTTPRouteRule, svc routeServices, sp split) ([]gatewayv1.HTTPRouteRule, error) {
	out := make([]gatewayv1.HTTPRouteRule, len(rules))
	for i := range rules {
		rules[i].DeepCopyInto(&out[i])
	}
	var targets []int
	for i, rule := range out {
		if _, ok := ruleSplit(rule, svc); ok {
			targets = append(targets, i)
		}
	}
	if len(targets) == 0 {
		if len(out) == 0 {
			return nil, errors.New("the route has no rules to split")
		}
		targets = []int{0}
	}
	for _, i := range targets {
		rule := &out[i]
		port := refPort(rule.BackendRefs, svc)
		var refs []gatewayv1.HTTPBackendRef
		var stableDone, candidateDone bool
		for _, b := range rule.BackendRefs {
			switch {
			case refersTo(b.BackendObjectReference, svc.stable):
				if stableDone {
					continue // one backend per side
				}
				b.Weight, stableDone = ptr(int32(100-sp.Traffic)), true
			case refersTo(b.BackendObjectReference, svc.candidate):
				if candidateDone {
					continue
				}
				b.Weight, candidateDone = ptr(int32(sp.Traffic)), true
			}
			refs = append(refs, b)
		}
		if !stableDone {
			refs = append(refs, backendRef(svc.stable, port, 100-sp.Traffic))
		}
		if !candidateDone {
			refs = append(refs, backendRef(svc.candidate, port, sp.Traffic))
		}
		rule.BackendRefs = refs

		filters := slices.DeleteFunc(rule.Filters, func(f gatewayv1.HTTPRouteFilter) bool {
			return f.Type == gatewayv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil &&
				refersTo(f.RequestMirror.BackendRef, svc.candidate)
		})
		if sp.Mirror > 0 {
			ref := backendRef(svc.candidate, port, 0).BackendObjectReference
			filters = append(filters, gatewayv1.HTTPRouteFilter{
				Type:          gatewayv1.HTTPRouteFilterRequestMirror,
				RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: ref, Percent: ptr(int32(sp.Mirror))},
			})
		}
		if len(filters) == 0 {
			filters = nil
		}
		rule.Filters = filters
	}
	return out, nil
}

// refPort is the port the route uses for the stable Service, which the
// candidate's backend gets too when it is added.
func refPort(refs []gatewayv1.HTTPBackendRef, svc routeServices) *gatewayv1.PortNumber {
	for _, b := range refs {
		if refersTo(b.BackendObjectReference, svc.stable) || refersTo(b.BackendObjectReference, svc.candidate) {
			if b.Port != nil {
				return b.Port
			}
		}
	}
	return nil
}

func backendRef(svc *corev1.Service, port *gatewayv1.PortNumber, weight int) gatewayv1.HTTPBackendRef {
	p := port
	if p != nil && !hasPort(svc, int32(*p)) {
		p = nil
	}
	if p == nil && len(svc.Spec.Ports) > 0 {
		p = ptr(gatewayv1.PortNumber(svc.Spec.Ports[0].Port))
	}
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc.Name), Port: p},
		Weight:                 ptr(int32(weight)),
	}}
}

func hasPort(svc *corev1.Service, port int32) bool {
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

// applySplit writes sp into the route by server-side apply. The route's
// rules are an atomic list, so the apply sends all of them, and the
// resourceVersion it read: a route changed in between is read again.
func (d *Driver) applySplit(ctx context.Context, w workloads, sp split) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := d.getRoute(ctx)
		if err != nil {
			return err
		}
		svc, err := d.services(ctx, r, w)
		if err != nil {
			return err
		}
		if cur, err := readSplit(r, svc); err == nil && cur == sp && r.Annotations[AnnotationSplit] == sp.String() {
			return nil
		}
		rules, err := withSplit(r.Spec.Rules, svc, sp)
		if err != nil {
			return fmt.Errorf("httproute %s/%s: %w", d.ns, d.route, err)
		}
		body, err := json.Marshal(map[string]any{
			"apiVersion": gatewayv1.GroupVersion.String(),
			"kind":       "HTTPRoute",
			"metadata": map[string]any{
				"name":            d.route,
				"namespace":       d.ns,
				"resourceVersion": r.ResourceVersion,
				"annotations":     map[string]string{AnnotationSplit: sp.String()},
			},
			"spec": map[string]any{"rules": rules},
		})
		if err != nil {
			return fmt.Errorf("encode httproute %s/%s: %w", d.ns, d.route, err)
		}
		_, err = d.gw.GatewayV1().HTTPRoutes(d.ns).Patch(ctx, d.route, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: FieldManager, Force: ptr(true)})
		if err != nil {
			if apierrors.IsConflict(err) {
				return err
			}
			return fmt.Errorf("apply %s to httproute %s/%s: %w", sp, d.ns, d.route, err)
		}
		return nil
	})
}
