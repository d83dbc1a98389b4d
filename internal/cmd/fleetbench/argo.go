package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

var rolloutGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// argo runs the Argo Rollouts controller, out of cluster, on n Rollouts
// of the canary strategy without a traffic router: setWeight 25, pause,
// setWeight 50, pause, then full. A change of target is a change of the
// pod template (the VERSION variable); the first workload write is the
// controller's first write to a ReplicaSet of that Rollout (creating the
// new one, or a change to one's spec or metadata).
type argo struct {
	b       *bench
	dyn     dynamic.Interface
	cmd     *exec.Cmd
	done    chan struct{}
	version int // the pod template's VERSION the fleet moves to
	metrics string
	// rollouts is the harness's own cache of the Rollouts, for their
	// status.
	rollouts cache.SharedIndexInformer
}

func (a *argo) name() string { return "argo-rollouts" }
func (a *argo) pid() int     { return a.cmd.Process.Pid }

func (a *argo) rollout(i int) *unstructured.Unstructured {
	name := fmt.Sprintf("r-%04d", i)
	labels := map[string]any{"app": name}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1",
		"kind":       "Rollout",
		"metadata":   map[string]any{"name": name, "namespace": a.b.ns},
		"spec": map[string]any{
			"replicas":             int64(a.b.replicas),
			"revisionHistoryLimit": int64(1),
			"selector":             map[string]any{"matchLabels": labels},
			"template":             podTemplate(labels, 1),
			"strategy": map[string]any{"canary": map[string]any{"steps": []any{
				map[string]any{"setWeight": int64(25)},
				map[string]any{"pause": map[string]any{"duration": a.b.pause.String()}},
				map[string]any{"setWeight": int64(50)},
				map[string]any{"pause": map[string]any{"duration": a.b.pause.String()}},
			}}},
		},
	}}
}

// podTemplate is the pod template of both tools' workloads: one container
// on a kwok node, which runs nothing; version is the change of target.
func podTemplate(labels map[string]any, version int) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"labels": labels},
		"spec": map[string]any{
			"terminationGracePeriodSeconds": int64(0),
			"containers": []any{map[string]any{
				"name": "app", "image": "fleetbench/app:1",
				"env": []any{map[string]any{"name": "VERSION", "value": strconv.Itoa(version)}},
			}},
		},
	}
}

func (a *argo) start(ctx context.Context) error {
	b := a.b
	var err error
	if a.dyn, err = dynamic.NewForConfig(b.adminCfg); err != nil {
		return err
	}
	a.version = 1
	a.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", b.freePort())
	health := b.freePort()
	metricsPort := a.metrics[len("http://127.0.0.1:") : len(a.metrics)-len("/metrics")]
	// Namespaced, as hal9-migrate is confined to its namespace: the
	// controller then watches that namespace alone. One replica, so no
	// leader election (its default is on; hal9-migrate's is off).
	a.cmd = exec.Command(b.argoBin, "--kubeconfig", b.userKubeconfig, "--namespace", b.ns, "--namespaced",
		"--leader-elect=false", "--metricsPort", metricsPort, "--healthzPort", strconv.Itoa(health), "--loglevel", "warn")
	logf, err := os.Create(filepath.Join(b.dir, "argo-rollouts.log"))
	if err != nil {
		return err
	}
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.argoBin, err)
	}
	a.done = make(chan struct{})
	go func() { a.cmd.Wait(); logf.Close(); close(a.done) }()

	a.watch(ctx)
	// Create the fleet; the controller brings each Rollout up at once (a
	// first version has no steps to walk).
	if err := parallel(ctx, b.n, 8, func(i int) error {
		_, err := a.dyn.Resource(rolloutGVR).Namespace(b.ns).Create(ctx, a.rollout(i), metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("create the rollouts: %w", err)
	}
	return b.waitFor(ctx, "every Rollout Healthy", b.setupTimeout, a.done, func() (int, bool) {
		n := 0
		for _, o := range a.rollouts.GetStore().List() {
			if a.healthy(o.(*unstructured.Unstructured)) {
				n++
			}
		}
		return n, n == b.n
	})
}

// healthy: the Rollout has seen its latest spec, runs it on all its
// replicas and nothing else, and is Healthy.
func (a *argo) healthy(u *unstructured.Unstructured) bool {
	st, _, _ := unstructured.NestedMap(u.Object, "status")
	if st == nil {
		return false
	}
	str := func(k string) string { s, _ := st[k].(string); return s }
	num := func(k string) int64 { v, _ := st[k].(int64); return v }
	r := int64(a.b.replicas)
	return str("observedGeneration") == strconv.FormatInt(u.GetGeneration(), 10) && str("phase") == "Healthy" &&
		str("stableRS") != "" && str("stableRS") == str("currentPodHash") &&
		num("availableReplicas") == r && num("updatedReplicas") == r && num("replicas") == r
}

func (a *argo) watch(ctx context.Context) {
	b := a.b
	df := dynamicinformer.NewFilteredDynamicSharedInformerFactory(a.dyn, 0, b.ns, nil)
	a.rollouts = df.ForResource(rolloutGVR).Informer()
	a.rollouts.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			u := obj.(*unstructured.Unstructured)
			if a.healthy(u) {
				b.fleet.completed(index(u.GetName()), time.Now())
			}
		},
	})
	kf := informers.NewSharedInformerFactoryWithOptions(b.kube, 0, informers.WithNamespace(b.ns))
	rs := kf.Apps().V1().ReplicaSets().Informer()
	owner := func(o *appsv1.ReplicaSet) int {
		for _, r := range o.OwnerReferences {
			if r.Kind == "Rollout" {
				return index(r.Name)
			}
		}
		return -1
	}
	rs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { b.fleet.wrote(owner(obj.(*appsv1.ReplicaSet)), time.Now()) },
		UpdateFunc: func(old, obj any) {
			o, n := old.(*appsv1.ReplicaSet), obj.(*appsv1.ReplicaSet)
			if workloadWrite(&o.ObjectMeta, &n.ObjectMeta) {
				b.fleet.wrote(owner(n), time.Now())
			}
		},
	})
	df.Start(ctx.Done())
	kf.Start(ctx.Done())
	df.WaitForCacheSync(ctx.Done())
	kf.WaitForCacheSync(ctx.Done())
}

// change moves the Rollouts of idx to the next pod template, eight
// patches at a time, each migration's change time the moment its patch
// returned.
func (a *argo) change(ctx context.Context, idx []int, _ bool) error {
	a.version++
	patch := fmt.Appendf(nil, `[{"op":"replace","path":"/spec/template/spec/containers/0/env/0/value","value":"%d"}]`, a.version)
	return parallel(ctx, len(idx), 8, func(k int) error {
		i := idx[k]
		_, err := a.dyn.Resource(rolloutGVR).Namespace(a.b.ns).Patch(ctx, fmt.Sprintf("r-%04d", i), types.JSONPatchType, patch, metav1.PatchOptions{})
		a.b.fleet.changedAt([]int{i}, time.Now())
		return err
	})
}

// reset: a Rollout needs none, the next change is another template.
func (a *argo) reset(context.Context, []int) error { return nil }

func (a *argo) stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	stopProcess(a.cmd, a.done)
}

// parallel runs f(0..n-1) on workers goroutines, returning the first
// error.
func parallel(ctx context.Context, n, workers int, f func(int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
