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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

// This file is what every kind of Gateway API route shares: the route's
// rules carry the split in the weights of their backend refs to the two
// Services and mirror with a RequestMirror filter, whatever the kind. A kind
// (httproute.go, grpcroute.go) says how to convert its rules to rule and
// back, and which typed client reads and writes it.

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

// rule is one rule of a route as the split sees it, whatever the kind of
// route: its backend refs and its filters, in order, each with its index
// in the route's own rule (-1 for one the split adds), so that writing it
// back keeps everything of the route's rule that the split does not own.
type rule struct {
	backends []ruleBackend
	filters  []ruleFilter
}

// ruleBackend is a backend ref of a rule: the object it names and its
// weight.
type ruleBackend struct {
	gatewayv1.BackendRef
	from int
}

// ruleFilter is a filter of a rule: its RequestMirror when it is a
// RequestMirror filter, nil when it is a filter of another type.
type ruleFilter struct {
	mirror *gatewayv1.HTTPRequestMirrorFilter
	from   int
}

// ruleKind converts the rules of one kind of route to rule and back: the
// route's rules are R, their backend refs B and their filters F.
type ruleKind[R, B, F any] struct {
	// copy deep-copies a rule.
	copy func(*R) R
	// parts points at a rule's backend refs and filters.
	parts func(*R) (*[]B, *[]F)
	// ref points at a backend ref's BackendRef.
	ref func(*B) *gatewayv1.BackendRef
	// mirror is a filter's RequestMirror, nil for a filter of another type.
	mirror func(*F) *gatewayv1.HTTPRequestMirrorFilter
	// mirrorFilter is a RequestMirror filter.
	mirrorFilter func(*gatewayv1.HTTPRequestMirrorFilter) F
}

// rules is rs as the split sees them.
func (k ruleKind[R, B, F]) rules(rs []R) []rule {
	out := make([]rule, len(rs))
	for i := range rs {
		bs, fs := k.parts(&rs[i])
		for j := range *bs {
			out[i].backends = append(out[i].backends, ruleBackend{BackendRef: *k.ref(&(*bs)[j]), from: j})
		}
		for j := range *fs {
			out[i].filters = append(out[i].filters, ruleFilter{mirror: k.mirror(&(*fs)[j]), from: j})
		}
	}
	return out
}

// with returns a copy of rs whose backend refs and filters are those of
// out, which were made from rules(rs): a backend ref or filter out keeps
// is the one of rs, with the BackendRef out gives it, and one out adds is
// made anew. rs is not modified.
func (k ruleKind[R, B, F]) with(rs []R, out []rule) []R {
	res := make([]R, len(rs))
	for i := range rs {
		res[i] = k.copy(&rs[i])
		bs, fs := k.parts(&res[i])
		var backends []B
		for _, b := range out[i].backends {
			var nb B
			if b.from >= 0 {
				nb = (*bs)[b.from]
			}
			*k.ref(&nb) = b.BackendRef
			backends = append(backends, nb)
		}
		var filters []F
		for _, f := range out[i].filters {
			if f.from >= 0 {
				filters = append(filters, (*fs)[f.from])
			} else {
				filters = append(filters, k.mirrorFilter(f.mirror))
			}
		}
		*bs, *fs = backends, filters
	}
	return res
}

// object is a route with rules rs and metadata meta as the split sees it.
func (k ruleKind[R, B, F]) object(meta metav1.ObjectMeta, rs []R) *routeObject {
	return &routeObject{
		resourceVersion: meta.ResourceVersion,
		annotations:     meta.Annotations,
		rules:           k.rules(rs),
		spec:            func(out []rule) any { return k.with(rs, out) },
	}
}

// routeObject is a route as read, of whatever kind.
type routeObject struct {
	resourceVersion string
	annotations     map[string]string
	rules           []rule
	// spec is the route's own rules with the backend refs and filters of
	// out, which were made from rules: what the apply sends.
	spec func(out []rule) any
}

// routeServices are the Services that front the two Deployments in the
// route, with the port to send the candidate.
type routeServices struct {
	stable, candidate *corev1.Service
}

// routeClient is the typed client of one kind of route, T, in the plan's
// namespace: Apply reads the route from it before it writes.
type routeClient[T any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

// gatewayRouter carries the split by the weights of a Gateway API route of
// type T and mirrors with the route's RequestMirror filter. It keeps the
// split last applied in the route's AnnotationSplit, so that Observe can
// tell which of several rules someone edited.
type gatewayRouter[T runtime.Object] struct {
	// reader is where Observe reads the route and the Services.
	reader reader
	ns     string
	name   string
	// kind is the route's kind, as the apply names it: "HTTPRoute".
	kind string
	// cached reads the route from reader.
	cached func(ctx context.Context, ns, name string) (T, error)
	client routeClient[T]
	// read is a route as the split sees it.
	read func(T) *routeObject
}

// Check accepts every split: a route can mirror.
func (r *gatewayRouter[T]) Check(workloads, traffic.Split) error { return nil }

// Observe reads the split from the route's rules.
func (r *gatewayRouter[T]) Observe(ctx context.Context, w workloads) (traffic.Split, error) {
	o, err := r.get(ctx, r.cached)
	if err != nil {
		return traffic.Split{}, err
	}
	svc, err := r.services(ctx, o, w)
	if err != nil {
		return traffic.Split{}, err
	}
	return readSplit(o, svc)
}

// Route writes sp into the route's rules.
func (r *gatewayRouter[T]) Route(ctx context.Context, w workloads, sp traffic.Split) error {
	return r.apply(ctx, w, sp)
}

// what names the route in errors: "httproute ns/name".
func (r *gatewayRouter[T]) what() string {
	return fmt.Sprintf("%s %s/%s", strings.ToLower(r.kind), r.ns, r.name)
}

// watched names the route as the plan index keys it: "httproutes".
func (r *gatewayRouter[T]) watched() objKey {
	return objKey{strings.ToLower(r.kind) + "s", r.ns, r.name}
}

// get reads the route with read: the reader's, or the API server's.
func (r *gatewayRouter[T]) get(ctx context.Context, read func(ctx context.Context, ns, name string) (T, error)) (*routeObject, error) {
	x, err := read(ctx, r.ns, r.name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s not found", r.what())
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", r.what(), err)
	}
	return r.read(x), nil
}

// services finds the Service of each Deployment: one whose selector picks
// the Deployment's pods and not the other's. Among several, one the route
// already names wins, then one named like the Deployment.
func (r *gatewayRouter[T]) services(ctx context.Context, o *routeObject, w workloads) (routeServices, error) {
	list, err := r.reader.services(ctx, r.ns)
	if err != nil {
		return routeServices{}, fmt.Errorf("list services in %s: %w", r.ns, err)
	}
	named := map[string]bool{}
	for _, rule := range o.rules {
		for _, b := range rule.backends {
			if isLocalService(b.BackendObjectReference, r.ns) {
				named[string(b.Name)] = true
			}
		}
	}
	stable, err := serviceOf(list, w.stable, w.candidate, named)
	if err != nil {
		return routeServices{}, err
	}
	candidate, err := serviceOf(list, w.candidate, w.stable, named)
	if err != nil {
		return routeServices{}, err
	}
	return routeServices{stable: stable, candidate: candidate}, nil
}

// apply writes sp into the route by server-side apply. The route's rules
// are an atomic list, so the apply sends all of them, and the
// resourceVersion it read: a route changed in between is read again. It
// reads the route from the API server, not the cache: a cache a moment
// behind would only make the write conflict.
func (r *gatewayRouter[T]) apply(ctx context.Context, w workloads, sp split) error {
	fresh := func(ctx context.Context, _, name string) (T, error) {
		return r.client.Get(ctx, name, metav1.GetOptions{})
	}
	return retryWrite(ctx, func() error {
		o, err := r.get(ctx, fresh)
		if err != nil {
			return err
		}
		svc, err := r.services(ctx, o, w)
		if err != nil {
			return err
		}
		if cur, err := readSplit(o, svc); err == nil && cur == sp && o.annotations[AnnotationSplit] == sp.String() {
			return nil
		}
		rules, err := withSplit(o.rules, svc, sp)
		if err != nil {
			return fmt.Errorf("%s: %w", r.what(), err)
		}
		body, err := json.Marshal(map[string]any{
			"apiVersion": gatewayv1.GroupVersion.String(),
			"kind":       r.kind,
			"metadata": map[string]any{
				"name":            r.name,
				"namespace":       r.ns,
				"resourceVersion": o.resourceVersion,
				"annotations":     map[string]string{AnnotationSplit: sp.String()},
			},
			"spec": map[string]any{"rules": o.spec(rules)},
		})
		if err != nil {
			return fmt.Errorf("encode %s: %w", r.what(), err)
		}
		got, err := r.client.Patch(ctx, r.name, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: FieldManager, Force: ptr(true)})
		if err != nil {
			return fmt.Errorf("apply %s to %s: %w", sp, r.what(), err)
		}
		r.reader.wrote(got)
		return nil
	})
}

func serviceOf(svcs []*corev1.Service, x, other deployment, named map[string]bool) (*corev1.Service, error) {
	own := labels.Set(x.Spec.Template.Labels)
	theirs := labels.Set(other.Spec.Template.Labels)
	var fit []*corev1.Service
	for _, svc := range svcs {
		sel := svc.Spec.Selector
		if len(sel) == 0 {
			continue
		}
		s := labels.SelectorFromSet(sel)
		if s.Matches(own) && !s.Matches(theirs) {
			fit = append(fit, svc)
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

// mirrorsTo reports whether f is a RequestMirror filter to svc.
func (f ruleFilter) mirrorsTo(svc *corev1.Service) bool {
	return f.mirror != nil && refersTo(f.mirror.BackendRef, svc)
}

// ruleSplit reads the split of one rule, and whether the rule routes to
// either side at all.
func ruleSplit(r rule, svc routeServices) (split, bool) {
	var sw, cw int
	found := false
	for _, b := range r.backends {
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
	for _, f := range r.filters {
		if !f.mirrorsTo(svc.candidate) {
			continue
		}
		m := f.mirror
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
func readSplit(o *routeObject, svc routeServices) (split, error) {
	var splits []split
	for _, r := range o.rules {
		if s, ok := ruleSplit(r, svc); ok {
			splits = append(splits, s)
		}
	}
	if len(splits) == 0 {
		return split{}, nil
	}
	out := splits[0]
	if last, ok := parseSplit(o.annotations[AnnotationSplit]); ok {
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
func withSplit(rules []rule, svc routeServices, sp split) ([]rule, error) {
	out := slices.Clone(rules)
	var targets []int
	for i, r := range out {
		if _, ok := ruleSplit(r, svc); ok {
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
		r := out[i]
		port := refPort(r.backends, svc)
		var refs []ruleBackend
		var stableDone, candidateDone bool
		for _, b := range r.backends {
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
			refs = append(refs, ruleBackend{BackendRef: backendRef(svc.stable, port, 100-sp.Traffic), from: -1})
		}
		if !candidateDone {
			refs = append(refs, ruleBackend{BackendRef: backendRef(svc.candidate, port, sp.Traffic), from: -1})
		}

		filters := slices.DeleteFunc(slices.Clone(r.filters), func(f ruleFilter) bool {
			return f.mirrorsTo(svc.candidate)
		})
		if sp.Mirror > 0 {
			ref := backendRef(svc.candidate, port, 0).BackendObjectReference
			filters = append(filters, ruleFilter{
				mirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: ref, Percent: ptr(int32(sp.Mirror))},
				from:   -1,
			})
		}
		out[i] = rule{backends: refs, filters: filters}
	}
	return out, nil
}

// refPort is the port the route uses for the stable Service, which the
// candidate's backend gets too when it is added.
func refPort(refs []ruleBackend, svc routeServices) *gatewayv1.PortNumber {
	for _, b := range refs {
		if refersTo(b.BackendObjectReference, svc.stable) || refersTo(b.BackendObjectReference, svc.candidate) {
			if b.Port != nil {
				return b.Port
			}
		}
	}
	return nil
}

func backendRef(svc *corev1.Service, port *gatewayv1.PortNumber, weight int) gatewayv1.BackendRef {
	p := port
	if p != nil && !hasPort(svc, int32(*p)) {
		p = nil
	}
	if p == nil && len(svc.Spec.Ports) > 0 {
		p = ptr(gatewayv1.PortNumber(svc.Spec.Ports[0].Port))
	}
	return gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(svc.Name), Port: p},
		Weight:                 ptr(int32(weight)),
	}
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
