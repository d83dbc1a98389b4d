package kubernetes

import (
	"sync"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// planIndex knows which plans read which objects, so that a watched
// change wakes the plans it concerns at once rather than at their next
// interval: someone scaling a Deployment by hand, a pod turning ready (the
// Deployment's status), a Job finishing, a route or the flags edited.
//
// A plan is registered by the driver opened for it last; opening another
// for the same plan (its driver block changed) replaces the objects it
// reads, and closing the driver releases them unless a newer one took
// over. The driver's own writes wake the plan too: its next cycle finds
// the objects as it wants them and writes nothing (every write is skipped
// when the object already is as wanted, and an apply that changes nothing
// changes no resourceVersion, so it makes no event), so a wake cannot
// feed itself. Someone else's controller fighting the driver over a field
// could: each of its writes wakes the plan, whose step writes again. So a
// plan is woken at most once per wakeEvery; a change within that time
// wakes it at the end of it, never lost, and a burst (a rollout's
// Deployment status, pod after pod) is one wake.
type planIndex struct {
	wake func(plan string)

	mu      sync.Mutex
	plans   map[string]*Driver
	keys    map[objKey]map[string]bool // object → the plans that read it
	woken   map[string]time.Time       // when each plan was last woken
	pending map[string]bool            // plans with a wake waiting for its time
}

// wakeEvery is the least time between two wakes of one plan.
const wakeEvery = time.Second

func newPlanIndex(wake func(plan string)) *planIndex {
	return &planIndex{
		wake: wake, plans: map[string]*Driver{}, keys: map[objKey]map[string]bool{},
		woken: map[string]time.Time{}, pending: map[string]bool{},
	}
}

// watched are the objects d reads, as the index keys them: its
// Deployments (and their autoscalers, keyed by the Deployment they
// target), its route, the Services of a routed plan (any of the
// namespace's: the route's backends are chosen among them), its flags
// ConfigMap and its Jobs (by LabelPlan).
func (d *Driver) watched() []objKey {
	keys := []objKey{
		{"deployments", d.ns, d.stable},
		{"deployments", d.ns, d.candidate},
		{"configmaps", d.ns, d.flags},
		{"jobs", d.ns, d.plan},
	}
	if r, ok := d.router.(interface{ watched() objKey }); ok {
		keys = append(keys, r.watched(), objKey{"services", d.ns, ""})
	}
	return keys
}

// register makes d the driver of its plan.
func (x *planIndex) register(d *Driver) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old := x.plans[d.plan]; old != nil {
		x.drop(old)
	}
	x.plans[d.plan] = d
	for _, k := range d.watched() {
		if x.keys[k] == nil {
			x.keys[k] = map[string]bool{}
		}
		x.keys[k][d.plan] = true
	}
}

// release forgets d, unless another driver of its plan replaced it.
func (x *planIndex) release(d *Driver) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.plans[d.plan] == d {
		x.drop(d)
		delete(x.plans, d.plan)
		delete(x.woken, d.plan)
	}
}

func (x *planIndex) drop(d *Driver) {
	for _, k := range d.watched() {
		delete(x.keys[k], d.plan)
		if len(x.keys[k]) == 0 {
			delete(x.keys, k)
		}
	}
}

// changed wakes the plans that read an object of kind that changed.
func (x *planIndex) changed(kind string, m metav1.Object) {
	if x == nil || x.wake == nil {
		return
	}
	k := objKey{kind, m.GetNamespace(), m.GetName()}
	switch kind {
	case "jobs":
		k.name = m.GetLabels()[LabelPlan]
	case "services":
		k.name = ""
	case "horizontalpodautoscalers":
		h, ok := m.(*autoscalingv2.HorizontalPodAutoscaler)
		if !ok || !isDeployment(h.Spec.ScaleTargetRef.APIVersion, h.Spec.ScaleTargetRef.Kind) {
			return
		}
		k = objKey{"deployments", k.ns, h.Spec.ScaleTargetRef.Name}
	case "scaledobjects":
		so, ok := m.(*unstructured.Unstructured)
		if !ok {
			return
		}
		name, _, _ := unstructured.NestedString(so.Object, "spec", "scaleTargetRef", "name")
		k = objKey{"deployments", k.ns, name}
	case "pods":
		return // a Job's pod: the Job's own status says when it is done
	}
	x.mu.Lock()
	var plans []string
	for p := range x.keys[k] {
		plans = append(plans, p)
	}
	x.mu.Unlock()
	for _, p := range plans {
		x.wakeOne(p)
	}
}

// wakeOne wakes plan now, or at the end of its wakeEvery.
func (x *planIndex) wakeOne(plan string) {
	x.mu.Lock()
	if x.pending[plan] {
		x.mu.Unlock()
		return
	}
	if wait := wakeEvery - time.Since(x.woken[plan]); wait > 0 {
		x.pending[plan] = true
		x.mu.Unlock()
		time.AfterFunc(wait, func() {
			x.mu.Lock()
			delete(x.pending, plan)
			x.woken[plan] = time.Now()
			x.mu.Unlock()
			x.wake(plan)
		})
		return
	}
	x.woken[plan] = time.Now()
	x.mu.Unlock()
	x.wake(plan)
}
