package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	toolscache "k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
)

// This file is the informer cache the drivers of one Opener share: the
// objects of every kind a driver reads, watched per namespace, so that an
// idle cycle of a thousand plans asks the API server nothing. A
// namespace's watches start when the first driver there is opened, a
// kind's when a driver first needs it (a route kind only for a plan with
// such a route, KEDA's ScaledObjects only when its CRD is served), so a
// cluster without the Gateway API CRDs never waits on a cache of routes;
// a namespace outside kubernetes.namespaces gets none. The first read of
// a kind in a namespace waits for its cache to sync, within the caller's
// ctx. Watches are never resynced: an update is a change.
//
// What the driver writes it reads back at once (read-your-writes): the
// objects the API server returned to its writes, and the ones it
// deleted, are kept in an overlay until the watch has caught up with
// them (the integer resourceVersion compare of client-go's
// MutationCache, with deletes and creates too), so Observe never shows
// an object older than the driver made it.
//
// A change to an object a plan's driver reads wakes the plan (wake.go).

// kind is a kind the cache watches: its resource, and its informer in a
// namespace.
type kind struct {
	resource schema.GroupResource
	informer func(*space) toolscache.SharedIndexInformer
}

// kinds are the kinds the cache watches, by resource name. Jobs, their
// pods and ConfigMaps are watched only with LabelPlan: every Job and pod
// the driver reads has it from StartJob, and the flags ConfigMap from
// PublishFlags (a flags ConfigMap someone made without it reads as none
// until the driver first publishes, which labels it).
var kinds = map[string]kind{
	"deployments": {appsv1.Resource("deployments"), func(s *space) toolscache.SharedIndexInformer {
		return s.kube.Apps().V1().Deployments().Informer()
	}},
	"services": {corev1.Resource("services"), func(s *space) toolscache.SharedIndexInformer {
		return s.kube.Core().V1().Services().Informer()
	}},
	"horizontalpodautoscalers": {autoscalingv2.Resource("horizontalpodautoscalers"), func(s *space) toolscache.SharedIndexInformer {
		return s.kube.Autoscaling().V2().HorizontalPodAutoscalers().Informer()
	}},
	"jobs": {batchv1.Resource("jobs"), func(s *space) toolscache.SharedIndexInformer {
		return s.labelled.Batch().V1().Jobs().Informer()
	}},
	"pods": {corev1.Resource("pods"), func(s *space) toolscache.SharedIndexInformer {
		return s.labelled.Core().V1().Pods().Informer()
	}},
	"configmaps": {corev1.Resource("configmaps"), func(s *space) toolscache.SharedIndexInformer {
		return s.labelled.Core().V1().ConfigMaps().Informer()
	}},
	"httproutes": {gatewayv1.Resource("httproutes"), func(s *space) toolscache.SharedIndexInformer {
		return s.gw.Gateway().V1().HTTPRoutes().Informer()
	}},
	"grpcroutes": {gatewayv1.Resource("grpcroutes"), func(s *space) toolscache.SharedIndexInformer {
		return s.gw.Gateway().V1().GRPCRoutes().Informer()
	}},
	"scaledobjects": {scaledObjects.GroupResource(), func(s *space) toolscache.SharedIndexInformer {
		return s.dyn.ForResource(scaledObjects).Informer()
	}},
}

// kedaRecheck is how long the cache trusts an answer that KEDA's CRD is
// not served before it asks discovery again (on a write path only: Observe
// never reads ScaledObjects).
const kedaRecheck = 5 * time.Minute

// informerCache is the cache of one cluster.
type informerCache struct {
	c       clients // the informers' own, with a rate limiter of their own
	allowed []string
	log     *slog.Logger
	stop    chan struct{}
	index   *planIndex
	overlay overlay

	mu     sync.Mutex
	spaces map[string]*space
	closed bool

	kedaMu      sync.Mutex
	kedaServed  bool
	kedaChecked time.Time
}

// space is the informers of one namespace.
type space struct {
	ns       string
	kube     informers.SharedInformerFactory
	labelled informers.SharedInformerFactory // LabelPlan only
	gw       gatewayinformers.SharedInformerFactory
	dyn      dynamicinformer.DynamicSharedInformerFactory

	mu      sync.Mutex
	running map[string]toolscache.SharedIndexInformer
	failed  map[string]error // the last list or watch error of a kind
}

type factory interface {
	Start(stop <-chan struct{})
	Shutdown()
}

func newInformerCache(c clients, allowed []string, index *planIndex, log *slog.Logger) *informerCache {
	return &informerCache{
		c: c, allowed: allowed, log: log, index: index,
		stop: make(chan struct{}), spaces: map[string]*space{},
		overlay: overlay{m: map[objKey]written{}},
	}
}

// space returns ns's informers, made on first use; never for a namespace
// outside the allow-list.
func (c *informerCache) space(ns string) (*space, error) {
	if len(c.allowed) > 0 && !slices.Contains(c.allowed, ns) {
		return nil, fmt.Errorf("namespace %q is not one the daemon may act in", ns)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("the informers of namespace %s: the driver's cache is closed", ns)
	}
	if s, ok := c.spaces[ns]; ok {
		return s, nil
	}
	s := &space{
		ns:   ns,
		kube: informers.NewSharedInformerFactoryWithOptions(c.c.kube, 0, informers.WithNamespace(ns)),
		labelled: informers.NewSharedInformerFactoryWithOptions(c.c.kube, 0, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelPlan })),
		gw:      gatewayinformers.NewSharedInformerFactoryWithOptions(c.c.gw, 0, gatewayinformers.WithNamespace(ns)),
		dyn:     dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.c.dyn, 0, ns, nil),
		running: map[string]toolscache.SharedIndexInformer{},
		failed:  map[string]error{},
	}
	c.spaces[ns] = s
	return s, nil
}

// start starts the informer of kind in ns unless it runs, and returns it.
func (c *informerCache) start(ns, kind string) (toolscache.SharedIndexInformer, error) {
	s, err := c.space(ns)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if inf, ok := s.running[kind]; ok {
		return inf, nil
	}
	inf := kinds[kind].informer(s)
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if !initial { // the first list is not a change
				c.changed(kind, nil, obj, false)
			}
		},
		UpdateFunc: func(old, obj any) { c.changed(kind, old, obj, false) },
		DeleteFunc: func(obj any) { c.changed(kind, nil, obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("watch %s in %s: %w", kind, ns, err)
	}
	// The informer retries a failed list or watch on its own; its error is
	// kept for a read waiting on the cache to report, and logged here
	// rather than by klog.
	if err := inf.SetWatchErrorHandler(func(_ *toolscache.Reflector, err error) {
		s.mu.Lock()
		s.failed[kind] = err
		s.mu.Unlock()
		level := slog.LevelWarn
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			level = slog.LevelDebug // a watch too old to resume: it lists again
		}
		c.log.Log(context.Background(), level, "watch failed", "kind", kind, "namespace", ns, "err", err)
	}); err != nil {
		return nil, fmt.Errorf("watch %s in %s: %w", kind, ns, err)
	}
	for _, f := range []factory{s.kube, s.labelled, s.gw, s.dyn} {
		f.Start(c.stop) // starts what is new only
	}
	s.running[kind] = inf
	c.log.Debug("watching", "kind", kind, "namespace", ns)
	return inf, nil
}

// changed is an event of kind: the overlay forgets what the watch has
// caught up with, and the plans that read the object wake.
func (c *informerCache) changed(kind string, old, obj any, deleted bool) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	if o, ok := old.(metav1.Object); ok && o.GetResourceVersion() == m.GetResourceVersion() {
		return // no change: a relist
	}
	c.overlay.seen(kind, m, deleted)
	c.index.changed(kind, m)
}

// synced waits, within ctx, for the informer of kind in ns to have
// listed, starting it if need be. A list the API server refuses for good
// (forbidden: RBAC without list and watch; not found: a CRD not
// installed) fails the read at once instead of at the end of ctx.
func (c *informerCache) synced(ctx context.Context, ns, kind string) (toolscache.SharedIndexInformer, error) {
	inf, err := c.start(ns, kind)
	if err != nil {
		return nil, err
	}
	if inf.HasSynced() {
		return inf, nil
	}
	s, _ := c.space(ns)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !inf.HasSynced() {
		s.mu.Lock()
		failed := s.failed[kind]
		s.mu.Unlock()
		if apierrors.IsForbidden(failed) || apierrors.IsNotFound(failed) || apierrors.IsUnauthorized(failed) {
			return nil, fmt.Errorf("the cache of %s in %s: %w", kind, ns, failed)
		}
		select {
		case <-ctx.Done():
			if failed != nil {
				return nil, fmt.Errorf("the cache of %s in %s has not synced: %w (%w)", kind, ns, context.Cause(ctx), failed)
			}
			return nil, fmt.Errorf("the cache of %s in %s has not synced: %w", kind, ns, context.Cause(ctx))
		case <-c.stop:
			return nil, fmt.Errorf("the cache of %s in %s: the driver's cache is closed", kind, ns)
		case <-tick.C:
		}
	}
	return inf, nil
}

// get reads one object of kind, the overlay's copy when it is newer.
func (c *informerCache) get(ctx context.Context, ns, kind, name string) (runtime.Object, error) {
	inf, err := c.synced(ctx, ns, kind)
	if err != nil {
		return nil, err
	}
	obj, ok, err := inf.GetIndexer().GetByKey(ns + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("read %s %s/%s from the cache: %w", kind, ns, name, err)
	}
	var cached runtime.Object
	if ok {
		cached = obj.(runtime.Object)
	}
	if got := c.overlay.newer(objKey{kind, ns, name}, cached); got != nil {
		return got, nil
	}
	return nil, apierrors.NewNotFound(kinds[kind].resource, name)
}

// list reads the objects of kind in ns that sel selects, each the
// overlay's copy when it is newer.
func (c *informerCache) list(ctx context.Context, ns, kind string, sel labels.Selector) ([]runtime.Object, error) {
	inf, err := c.synced(ctx, ns, kind)
	if err != nil {
		return nil, err
	}
	var out []runtime.Object
	err = toolscache.ListAllByNamespace(inf.GetIndexer(), ns, sel, func(obj any) {
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		if got := c.overlay.newer(objKey{kind, ns, m.GetName()}, obj.(runtime.Object)); got != nil {
			out = append(out, got)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list %s in %s from the cache: %w", kind, ns, err)
	}
	return out, nil
}

// keda reports whether KEDA's ScaledObjects are served, asking discovery
// at most once per kedaRecheck while they are not.
func (c *informerCache) keda() (bool, error) {
	c.kedaMu.Lock()
	defer c.kedaMu.Unlock()
	if c.kedaServed || time.Since(c.kedaChecked) < kedaRecheck {
		return c.kedaServed, nil
	}
	ok, err := kedaServed(c.c)
	if err != nil {
		return false, err
	}
	c.kedaServed, c.kedaChecked = ok, time.Now()
	return ok, nil
}

// namespaces are the namespaces the cache watches in, for tests.
func (c *informerCache) namespaces() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for ns := range c.spaces {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out
}

// close stops every informer and waits for them.
func (c *informerCache) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.stop)
	spaces := c.spaces
	c.mu.Unlock()
	for _, s := range spaces {
		for _, f := range []factory{s.kube, s.labelled, s.gw, s.dyn} {
			f.Shutdown()
		}
	}
}

// cacheReader reads through the cache.
type cacheReader struct{ c *informerCache }

var _ reader = cacheReader{}

// getAs reads one object of kind as a T.
func getAs[T runtime.Object](ctx context.Context, c *informerCache, ns, kind, name string) (T, error) {
	var zero T
	obj, err := c.get(ctx, ns, kind, name)
	if err != nil {
		return zero, err
	}
	x, ok := obj.(T)
	if !ok {
		return zero, fmt.Errorf("%s %s/%s in the cache is a %T", kind, ns, name, obj)
	}
	return x, nil
}

// listAs reads the objects of kind in ns that sel selects as Ts.
func listAs[T runtime.Object](ctx context.Context, c *informerCache, ns, kind string, sel labels.Selector) ([]T, error) {
	objs, err := c.list(ctx, ns, kind, sel)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, obj := range objs {
		if x, ok := obj.(T); ok {
			out = append(out, x)
		}
	}
	return out, nil
}

func (r cacheReader) deployment(ctx context.Context, ns, name string) (*appsv1.Deployment, error) {
	return getAs[*appsv1.Deployment](ctx, r.c, ns, "deployments", name)
}

func (r cacheReader) services(ctx context.Context, ns string) ([]*corev1.Service, error) {
	return listAs[*corev1.Service](ctx, r.c, ns, "services", labels.Everything())
}

func (r cacheReader) httpRoute(ctx context.Context, ns, name string) (*gatewayv1.HTTPRoute, error) {
	return getAs[*gatewayv1.HTTPRoute](ctx, r.c, ns, "httproutes", name)
}

func (r cacheReader) grpcRoute(ctx context.Context, ns, name string) (*gatewayv1.GRPCRoute, error) {
	return getAs[*gatewayv1.GRPCRoute](ctx, r.c, ns, "grpcroutes", name)
}

func (r cacheReader) job(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	return getAs[*batchv1.Job](ctx, r.c, ns, "jobs", name)
}

func (r cacheReader) pods(ctx context.Context, ns string, sel labels.Selector) ([]*corev1.Pod, error) {
	return listAs[*corev1.Pod](ctx, r.c, ns, "pods", sel)
}

func (r cacheReader) configMap(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	return getAs[*corev1.ConfigMap](ctx, r.c, ns, "configmaps", name)
}

func (r cacheReader) autoscalers(ctx context.Context, ns string) ([]*autoscalingv2.HorizontalPodAutoscaler, error) {
	return listAs[*autoscalingv2.HorizontalPodAutoscaler](ctx, r.c, ns, "horizontalpodautoscalers", labels.Everything())
}

func (r cacheReader) scaledObjects(ctx context.Context, ns string) ([]*unstructured.Unstructured, error) {
	if ok, err := r.c.keda(); err != nil || !ok {
		return nil, err
	}
	return listAs[*unstructured.Unstructured](ctx, r.c, ns, "scaledobjects", labels.Everything())
}

func (r cacheReader) wrote(obj runtime.Object)   { r.c.overlay.put(obj, false) }
func (r cacheReader) removed(obj runtime.Object) { r.c.overlay.put(obj, true) }

// objKey names an object: its resource (kinds' keys), namespace and name.
type objKey struct{ kind, ns, name string }

// addTTL is how long the overlay shows an object the driver created that
// the watch has not shown yet: the watch is milliseconds behind, unless
// the object was deleted before it could show it.
const addTTL = time.Minute

// written is what the driver last wrote of an object: the object as the
// API server answered, or, when gone is set, that it deleted the object
// of that uid.
type written struct {
	obj  runtime.Object
	uid  types.UID
	rv   uint64
	gone bool
	at   time.Time
}

// overlay is the objects the driver wrote that the watches have not
// caught up with.
type overlay struct {
	mu sync.Mutex
	m  map[objKey]written
}

// put records obj as written, or as deleted.
func (o *overlay) put(obj runtime.Object, gone bool) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	k, ok := keyOf(obj, m)
	if !ok {
		return
	}
	rv, _ := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
	o.mu.Lock()
	defer o.mu.Unlock()
	if w, ok := o.m[k]; ok && !gone && !w.gone && w.rv > rv {
		return // an older answer that came in late
	}
	o.m[k] = written{obj: obj, uid: m.GetUID(), rv: rv, gone: gone, at: time.Now()}
}

// seen forgets what the watch of kind has caught up with: an object as
// new as the one written, or the object's delete.
func (o *overlay) seen(kind string, m metav1.Object, deleted bool) {
	k := objKey{kind, m.GetNamespace(), m.GetName()}
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.m[k]
	if !ok {
		return
	}
	rv, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
	if deleted || (!w.gone && (err != nil || rv >= w.rv)) {
		delete(o.m, k)
	}
}

// newer returns what a read of k should see, given the cache's copy
// (nil when the cache has none): the overlay's when it is newer, nil when
// the object is gone.
func (o *overlay) newer(k objKey, cached runtime.Object) runtime.Object {
	o.mu.Lock()
	defer o.mu.Unlock()
	w, ok := o.m[k]
	if !ok {
		return cached
	}
	if cached == nil {
		if w.gone || time.Since(w.at) > addTTL {
			delete(o.m, k)
			return nil
		}
		return w.obj
	}
	m, err := meta.Accessor(cached)
	if err != nil {
		return cached
	}
	if w.gone {
		if (w.uid == "" || m.GetUID() == w.uid) && time.Since(w.at) <= addTTL {
			return nil // deleted: the watch has not said so yet
		}
		delete(o.m, k)
		return cached
	}
	if rv, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64); err != nil || rv >= w.rv {
		delete(o.m, k)
		return cached
	}
	return w.obj
}

// keyOf names obj by its kind's resource.
func keyOf(obj runtime.Object, m metav1.Object) (objKey, bool) {
	var kind string
	switch x := obj.(type) {
	case *appsv1.Deployment:
		kind = "deployments"
	case *corev1.Service:
		kind = "services"
	case *autoscalingv2.HorizontalPodAutoscaler:
		kind = "horizontalpodautoscalers"
	case *batchv1.Job:
		kind = "jobs"
	case *corev1.Pod:
		kind = "pods"
	case *corev1.ConfigMap:
		kind = "configmaps"
	case *gatewayv1.HTTPRoute:
		kind = "httproutes"
	case *gatewayv1.GRPCRoute:
		kind = "grpcroutes"
	case *unstructured.Unstructured:
		if x.GetKind() != "ScaledObject" {
			return objKey{}, false
		}
		kind = "scaledobjects"
	default:
		return objKey{}, false
	}
	return objKey{kind, m.GetNamespace(), m.GetName()}, true
}
