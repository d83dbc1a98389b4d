package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

var _ drivers.UsageReader = (*Driver)(nil)

// ErrMetricsNotServed is wrapped by Usage's error when the cluster does
// not serve the resource metrics API, metrics.k8s.io: no metrics-server
// (or another implementation) is registered for it, or the one registered
// does not answer.
var ErrMetricsNotServed = errors.New("metrics.k8s.io is not served")

// usageTimeout bounds one Usage call: reading the Deployment, its pods and
// their metrics. The metrics go through the API server to metrics-server,
// which answers from memory, so this is generous.
const usageTimeout = 10 * time.Second

// Usage reads what each running pod of side uses now from the resource
// metrics API, metrics.k8s.io/v1beta1, as metrics-server serves it: the
// sum over the pod's containers of their CPU and memory working set, in
// percent of the sum of their limits (of a container's request where it
// sets no limit). A container with neither, for CPU or memory, is an
// error: a share of the node would not tell a pod near its limit from an
// idle one. A pod the metrics do not cover yet (started since the last
// scrape) is left out.
func (d *Driver) Usage(ctx context.Context, side plan.Side) ([]drivers.Usage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read %s usage of %s: %w", side, d.plan, err)
	}
	var name string
	switch side {
	case plan.Stable:
		name = d.stable
	case plan.Candidate:
		name = d.candidate
	default:
		return nil, fmt.Errorf("read usage of %s: unknown side %q", d.plan, side)
	}
	ctx, cancel := context.WithTimeout(ctx, usageTimeout)
	defer cancel()
	us, err := d.usage(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read %s usage of %s: %w", side, d.plan, err)
	}
	return us, nil
}

func (d *Driver) usage(ctx context.Context, name string) ([]drivers.Usage, error) {
	x, err := d.getDeployment(ctx, name)
	if err != nil {
		return nil, err
	}
	sel, err := metav1.LabelSelectorAsSelector(x.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s: selector: %w", d.ns, name, err)
	}
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	pods, err := d.kube.CoreV1().Pods(d.ns).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list pods of deployment %s/%s: %w", d.ns, name, err)
	}
	limits := map[string]podLimits{}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		l, err := limitsOf(&p)
		if err != nil {
			return nil, fmt.Errorf("deployment %s/%s: pod %s: %w", d.ns, name, p.Name, err)
		}
		limits[p.Name] = l
	}
	if len(limits) == 0 {
		return []drivers.Usage{}, nil
	}
	ms, err := d.metrics.MetricsV1beta1().PodMetricses(d.ns).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("read pod metrics of deployment %s/%s: %w", d.ns, name, metricsError(err, d.ns, name))
	}
	us := []drivers.Usage{}
	for _, m := range ms.Items {
		l, ok := limits[m.Name]
		if !ok {
			continue
		}
		var cpu, mem resource.Quantity
		for _, c := range m.Containers {
			cpu.Add(c.Usage[corev1.ResourceCPU])
			mem.Add(c.Usage[corev1.ResourceMemory])
		}
		us = append(us, drivers.Usage{
			Instance: m.Name,
			CPU:      percent(cpu, l.cpu),
			Memory:   percent(mem, l.memory),
		})
	}
	return us, nil
}

// podLimits are what a pod may use, the denominators of its usage.
type podLimits struct{ cpu, memory resource.Quantity }

// limitsOf returns a pod's CPU and memory limits: the pod-level ones where
// the pod sets them, else the sum over the containers that run alongside
// each other (its containers and its sidecars, the init containers that
// keep running), each container's limit or, where it sets none, its
// request.
func limitsOf(p *corev1.Pod) (podLimits, error) {
	var l podLimits
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		sum := &l.cpu
		if r == corev1.ResourceMemory {
			sum = &l.memory
		}
		if pr := p.Spec.Resources; pr != nil {
			if q, ok := pr.Limits[r]; ok && !q.IsZero() {
				*sum = q.DeepCopy()
				continue
			}
		}
		var cs []corev1.Container
		for _, c := range p.Spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				cs = append(cs, c)
			}
		}
		cs = append(cs, p.Spec.Containers...)
		for _, c := range cs {
			q, ok := c.Resources.Limits[r]
			if !ok || q.IsZero() {
				q, ok = c.Resources.Requests[r]
			}
			if !ok || q.IsZero() {
				return podLimits{}, fmt.Errorf("container %s has no %s limit (nor request) to measure its usage against: set resources.limits.%s in the Deployment's pod template", c.Name, r, r)
			}
			sum.Add(q)
		}
	}
	return l, nil
}

// percent is 100*used/limit; limit is never zero.
func percent(used, limit resource.Quantity) float64 {
	return 100 * used.AsApproximateFloat64() / limit.AsApproximateFloat64()
}

// metricsError says what to do when the API server cannot serve the pod
// metrics: a group it does not know is a 404, one registered through an
// APIService whose server is down or unreachable a 503.
func metricsError(err error, ns, deployment string) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: the API server has no such group (%v); install metrics-server to serve it, %s",
			ErrMetricsNotServed, err, prometheusInstead(ns, deployment))
	case apierrors.IsServiceUnavailable(err):
		return fmt.Errorf("%w: its APIService is registered but does not answer (%v); check metrics-server's pods and `kubectl get apiservice v1beta1.metrics.k8s.io`, %s",
			ErrMetricsNotServed, err, prometheusInstead(ns, deployment))
	}
	return err
}

// prometheusInstead names the guardrail to use where metrics.k8s.io is not
// to be had: the same ratio from cAdvisor's and kube-state-metrics'
// series in Prometheus.
func prometheusInstead(ns, deployment string) string {
	return fmt.Sprintf("or measure the side with a prometheus guardrail on cAdvisor's series, as: "+
		`max(100 * rate(container_cpu_usage_seconds_total{namespace=%q,pod=~"%s-[a-z0-9]+-[a-z0-9]{5}",container!=""}[1m]) / on(namespace,pod,container) kube_pod_container_resource_limits{resource="cpu"})`,
		ns, deployment)
}
