package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/traffic"
)

// workloads are the plan's two Deployments as last read.
type workloads struct {
	stable, candidate deployment
}

type deployment struct{ *appsv1.Deployment }

// replicas is the desired count; Kubernetes defaults an unset one to 1.
func (x deployment) replicas() int {
	if x.Spec.Replicas == nil {
		return 1
	}
	return int(*x.Spec.Replicas)
}

func (x deployment) ready() int { return int(x.Status.ReadyReplicas) }

func (d *Driver) workloads(ctx context.Context) (workloads, error) {
	s, err := d.getDeployment(ctx, d.stable)
	if err != nil {
		return workloads{}, err
	}
	c, err := d.getDeployment(ctx, d.candidate)
	if err != nil {
		return workloads{}, err
	}
	return workloads{stable: s, candidate: c}, nil
}

func (d *Driver) getDeployment(ctx context.Context, name string) (deployment, error) {
	x, err := d.read.deployment(ctx, d.ns, name)
	if apierrors.IsNotFound(err) {
		return deployment{}, fmt.Errorf("deployment %s/%s not found", d.ns, name)
	}
	if err != nil {
		return deployment{}, fmt.Errorf("get deployment %s/%s: %w", d.ns, name, err)
	}
	return deployment{x}, nil
}

// total is the capacity the migration keeps, in replicas: as recorded on
// the stable Deployment, or else what the Deployments have now (with a
// route, stable keeps its replicas until decommissioned, so its count is
// the capacity; by replica ratio, the two together are).
func (w workloads) total(routed bool) int {
	if n, err := strconv.Atoi(w.stable.Annotations[AnnotationReplicas]); err == nil && n > 0 {
		return n
	}
	n := w.stable.replicas() + w.candidate.replicas()
	if routed && w.stable.replicas() > 0 {
		n = w.stable.replicas()
	}
	return max(n, 1)
}

func (w workloads) state() drivers.State {
	return drivers.State{
		StableReplicas:    w.stable.replicas(),
		StableReady:       w.stable.ready(),
		CandidateReplicas: w.candidate.replicas(),
		CandidateReady:    w.candidate.ready(),
		Decommissioned:    w.stable.Annotations[AnnotationDecommissioned] == "true" && w.stable.replicas() == 0,
	}
}

// replicas is how many replicas each side gets at a target.
type replicas struct {
	Stable, Candidate int
	Decommission      bool
}

// replicasFor works out the replicas at t for a capacity of total.
//
// By replica ratio the two sides share total between them as
// traffic.RatioFor says: stable keeps a replica until full, the candidate
// has one once it takes traffic, so a total of 1 runs one on each side in
// between.
//
// With a route the route carries the split: stable keeps the whole capacity
// until it is decommissioned, so that a rollback finds it warm, and the
// candidate gets its share of the capacity (of live or mirrored requests,
// whichever is larger) rounded up.
func replicasFor(t drivers.Target, total int, routed bool) replicas {
	if t.Decommission {
		return replicas{Stable: 0, Candidate: total, Decommission: true}
	}
	if routed {
		share := max(t.Traffic, t.Mirror)
		return replicas{Stable: total, Candidate: (total*share + 99) / 100}
	}
	r := traffic.RatioFor(t.Traffic, total)
	return replicas{Stable: r.Stable, Candidate: r.Candidate}
}

// ratioShare is the candidate's share of traffic when the split is the
// replica ratio: its share of the ready replicas, which are the ones a
// Service sends requests to; of the desired ones while none is ready.
func ratioShare(w workloads) int {
	s, c := w.stable.ready(), w.candidate.ready()
	if s+c == 0 {
		s, c = w.stable.replicas(), w.candidate.replicas()
	}
	return traffic.Share(c, s+c)
}

// scale applies rs to the two Deployments (through the bounds of an
// autoscaler that targets one, autoscaler.go), and records the capacity and
// any decommission on the stable one, and returns them as the API server
// answered. A Deployment already as wanted is left alone.
func (d *Driver) scale(ctx context.Context, w workloads, rs replicas, total int) (workloads, error) {
	ann := map[string]string{AnnotationReplicas: strconv.Itoa(total)}
	if rs.Decommission {
		ann[AnnotationDecommissioned] = "true"
	}
	sa, ca, err := d.autoscalers(ctx)
	if err != nil {
		return workloads{}, err
	}
	side := func(x deployment, a *autoscaler, n int, ann map[string]string) (deployment, error) {
		if a == nil {
			return d.applyDeployment(ctx, x, n, ann)
		}
		ref := a.original()
		if sa != nil {
			ref = sa.original()
		}
		return d.scaleAutoscaled(ctx, x, a, ref, n, total, ann)
	}
	s, err := side(w.stable, sa, rs.Stable, ann)
	if err != nil {
		return workloads{}, err
	}
	c, err := side(w.candidate, ca, rs.Candidate, nil)
	if err != nil {
		return workloads{}, err
	}
	return workloads{stable: s, candidate: c}, nil
}

// applyDeployment sets a Deployment's replicas and the driver's
// annotations by server-side apply, and returns the Deployment as it is
// then. Annotations the driver set before and leaves out now are removed:
// the apply owns exactly what it sends.
func (d *Driver) applyDeployment(ctx context.Context, x deployment, n int, ann map[string]string) (deployment, error) {
	if x.replicas() == n && sameManaged(x.Annotations, ann) {
		return x, nil
	}
	ac := appsv1ac.Deployment(x.Name, d.ns).WithSpec(appsv1ac.DeploymentSpec().WithReplicas(int32(n)))
	if len(ann) > 0 {
		ac.WithAnnotations(ann)
	}
	var got *appsv1.Deployment
	err := retryWrite(ctx, func() (err error) {
		got, err = d.kube.AppsV1().Deployments(d.ns).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	})
	if err != nil {
		return deployment{}, fmt.Errorf("scale deployment %s/%s to %d: %w", d.ns, x.Name, n, err)
	}
	d.read.wrote(got)
	return deployment{got}, nil
}

// sameManaged reports whether the driver's annotations on an object are
// exactly want.
func sameManaged(have, want map[string]string) bool {
	got := map[string]string{}
	for _, k := range []string{AnnotationReplicas, AnnotationDecommissioned} {
		if v, ok := have[k]; ok {
			got[k] = v
		}
	}
	if want == nil {
		want = map[string]string{}
	}
	return maps.Equal(got, want)
}

// share is 100*part/whole rounded to the nearest point; 0 of nothing.
func share(part, whole int) int { return traffic.Share(part, whole) }

func abs(x int) int { return max(x, -x) }
