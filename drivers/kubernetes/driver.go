// Package kubernetes drives a plan's two Deployments through the Kubernetes
// API with client-go: it splits traffic by the weights of a Gateway API
// HTTPRoute or GRPCRoute (and mirrors with its RequestMirror filter) or,
// without a route, by the ratio of the Deployments' replicas (each router
// one file behind the routers table, router.go, with the replicas and the
// split changed together in traffic.Shift's order); it runs the plan's jobs
// as batch Jobs; it publishes feature flags as a ConfigMap in the flagd
// flag-definition format; and it leaves a Kubernetes Event on both
// Deployments for every change it applies.
//
// Every write is a server-side apply under the field manager "hal9-migrate"
// (but for the scale subresource of a Deployment an autoscaler targets,
// autoscaler.go, which the driver sets only to and from zero),
// so `kubectl get -o yaml --show-managed-fields` shows which fields the
// daemon owns, and everything is observed back from the objects: the
// driver keeps no state of its own between calls (its informer cache is a
// copy of the objects, never a record of its own).
//
// The daemon's drivers (Opener, Cluster) read from shared informers, one
// cache per cluster watching, per namespace a plan names, the kinds its
// drivers read (cache.go): an idle cycle asks the API server nothing, so
// a thousand plans cost their watches, not a thousand GETs each interval,
// and the requests left are the writes. A watched change to a plan's
// objects wakes the plan at once (WithWake, wake.go). New, for a command
// that opens one driver once, reads from the API server directly; the two
// differ only in their reader (read.go).
//
// Usage reads what each side's pods use from the resource metrics API,
// metrics.k8s.io, which metrics-server serves from the kubelets' resource
// metrics: the pods the Deployment's selector selects, each pod's CPU and
// memory working set summed over its containers, in percent of the sum of
// their limits (of a container's request where it sets none). So a
// resources guardrail needs metrics-server in the cluster and
// resources.limits (or requests) on every container of both Deployments;
// without metrics-server, Usage says so, and a prometheus guardrail on
// cAdvisor's series measures the same thing:
//
//	max(100 * rate(container_cpu_usage_seconds_total{namespace="shop",pod=~"shop-v2-[a-z0-9]+-[a-z0-9]{5}",container!=""}[1m])
//	  / on(namespace,pod,container) kube_pod_container_resource_limits{resource="cpu"})
//	max(100 * container_memory_working_set_bytes{namespace="shop",pod=~"shop-v2-[a-z0-9]+-[a-z0-9]{5}",container!=""}
//	  / on(namespace,pod,container) kube_pod_container_resource_limits{resource="memory"})
//
// (per container rather than per pod, and with kube-state-metrics for the
// limits).
//
// The package does not create the workloads, Services, Gateways or routes:
// they are the user's, and an absent one is an error. It does not decide
// anything either: reconcile does.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"
	"k8s.io/utils/clock"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// FieldManager is the field manager of every server-side apply.
const FieldManager = "hal9-migrate"

// Annotations and labels the driver writes.
const (
	// AnnotationReplicas, on the stable Deployment, is the total capacity
	// the split keeps, in replicas. The driver records it on its first
	// apply from the replicas it finds; edit it to resize a migration.
	AnnotationReplicas = "migrate.hal9.ai/replicas"
	// AnnotationDecommissioned, on the stable Deployment, marks it scaled
	// to zero by a decommission rather than by a split at 100%.
	AnnotationDecommissioned = "migrate.hal9.ai/decommissioned"
	// AnnotationSplit, on the route, is the split last applied
	// ("traffic=25,mirror=0"): when someone edits one rule of several,
	// Observe reports the rule that strays from it.
	AnnotationSplit = "migrate.hal9.ai/split"
	// AnnotationJobID, on a Job, is the id the reconciler gave it.
	AnnotationJobID = "migrate.hal9.ai/job-id"
	// LabelPlan, on Jobs and the flags ConfigMap, names the plan.
	LabelPlan = "migrate.hal9.ai/plan"
	// LabelManagedBy is the usual managed-by label.
	LabelManagedBy = "app.kubernetes.io/managed-by"
)

// FlagsKey is the key of the flags ConfigMap that holds the flag
// definitions.
const FlagsKey = "flags.flagd.json"

var (
	_ drivers.Driver       = (*Driver)(nil)
	_ drivers.Checkpointer = (*Driver)(nil)
	_ drivers.JobRemover   = (*Driver)(nil)
	_ io.Closer            = (*Driver)(nil)
)

// Driver drives one plan's workloads. It is safe for concurrent use.
type Driver struct {
	kube    kubernetes.Interface
	gw      gatewayclient.Interface
	metrics metricsclient.Interface
	dyn     dynamic.Interface // KEDA's ScaledObjects (autoscaler.go)
	// read is where the driver observes: the cluster's informer cache,
	// or the API server; api is always the API server, for the reads a
	// write makes sure of first.
	read, api reader
	index     *planIndex // nil without a cache

	plan      string
	ns        string
	stable    string
	candidate string
	route     string // the route's name; "" splits by replica ratio
	router    traffic.Router[workloads]
	flags     string // the flags ConfigMap
	clock     clock.PassiveClock
	log       *slog.Logger
	instance  string

	mu        sync.Mutex
	tolerance int
	logs      map[string]string // job logs already fetched, by Job name

	readyTimeout time.Duration
}

// Option configures a Driver.
type Option func(*options)

type options struct {
	namespace  string
	namespaces []string // empty: any
	flags      func(planName string) string
	clock      clock.PassiveClock
	log        *slog.Logger
	instance   string
	ready      time.Duration
	wake       func(plan string)
	direct     bool
}

// WithDefaultNamespace sets the namespace of plans whose kubernetes block
// names none (default "default").
func WithDefaultNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithNamespaces confines the driver to namespaces: a plan whose
// namespace (or the default one) is not among them is refused when its
// driver is opened, before any call to the API server. None: any
// namespace, as the API server's RBAC allows. It is the daemon's
// kubernetes.namespaces setting, and goes with RBAC granted in those
// namespaces only (deploy/kubernetes/components/namespaced).
func WithNamespaces(namespaces ...string) Option {
	return func(o *options) { o.namespaces = slices.Clone(namespaces) }
}

// WithFlagsConfigMap names the ConfigMap the flags of a plan are published
// in (default "<plan>-flags", in the plan's namespace).
func WithFlagsConfigMap(name func(planName string) string) Option {
	return func(o *options) { o.flags = name }
}

// WithClock sets the clock that stamps Events (default the real one).
func WithClock(c clock.PassiveClock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets where the driver reports what it could not do without
// failing the call (an Event it could not write, logs it could not read).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithReadyTimeout bounds how long Apply waits, with a route, for new
// replicas to be ready before it sends them requests (default 30s). When
// they are not, Apply fails and leaves the route as it was; the reconciler
// tries again next cycle, the replicas already asked for, so a slow
// rollout holds up one plan's step, not the daemon's cycle.
func WithReadyTimeout(d time.Duration) Option { return func(o *options) { o.ready = d } }

// WithWake sets what an Opener's drivers call, with the plan's name, when
// a watched change to one of the plan's objects comes in (a Deployment
// scaled or its replicas turning ready, a Job finishing, the route or the
// flags edited): the daemon's WakePlan. It must not block.
func WithWake(wake func(plan string)) Option { return func(o *options) { o.wake = wake } }

// WithDirectReads makes an Opener's drivers read from the API server at
// every call, as New's do, rather than from shared informers: for a
// command that opens drivers once and exits.
func WithDirectReads() Option { return func(o *options) { o.direct = true } }

// WithInstance names this daemon replica in the Events it writes (default
// none).
func WithInstance(name string) Option { return func(o *options) { o.instance = name } }

func newOptions(opts []Option) options {
	o := options{
		namespace: "default",
		flags:     func(p string) string { return p + "-flags" },
		clock:     clock.RealClock{},
		log:       slog.New(slog.DiscardHandler),
		ready:     30 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// clients are the API clients every driver of one Opener shares.
type clients struct {
	kube    kubernetes.Interface
	gw      gatewayclient.Interface
	metrics metricsclient.Interface
	dyn     dynamic.Interface
}

func newClients(cfg *rest.Config) (clients, error) {
	if cfg == nil {
		return clients{}, errors.New("no Kubernetes client configuration")
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 && cfg.Burst == 0 {
		// client-go's default of 5 requests a second is for controllers
		// that only watch; the daemon's requests are its writes (its
		// informers have a limiter of their own), and a direct driver
		// reads every object it observes.
		cfg.QPS, cfg.Burst = 50, 100
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = FieldManager
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return clients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	return newClientsFor(cfg, hc)
}

func newClientsFor(cfg *rest.Config, hc *http.Client) (clients, error) {
	kube, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return clients{}, fmt.Errorf("kubernetes client: %w", err)
	}
	gw, err := gatewayclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return clients{}, fmt.Errorf("gateway API client: %w", err)
	}
	metrics, err := metricsclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return clients{}, fmt.Errorf("resource metrics client: %w", err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return clients{}, fmt.Errorf("dynamic client: %w", err)
	}
	return clients{kube: kube, gw: gw, metrics: metrics, dyn: dyn}, nil
}

// New returns the driver of p's workloads, which must have a kubernetes
// driver block, reading from the API server at every call. It does not
// contact the API server.
func New(cfg *rest.Config, p *plan.Plan, opts ...Option) (*Driver, error) {
	c, err := newClients(cfg)
	if err != nil {
		return nil, err
	}
	return newDriver(c, apiReader{c}, nil, p, newOptions(opts))
}

// Opener returns a drivers.Opener for plans with a kubernetes driver block;
// the drivers it opens share one connection pool and one informer cache
// (see Cluster). A plan with another driver is an error.
func Opener(cfg *rest.Config, opts ...Option) drivers.Opener {
	var (
		once sync.Once
		c    *Cluster
		cerr error
	)
	return func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("open the kubernetes driver: %w", err)
		}
		once.Do(func() { c, cerr = NewCluster(cfg, opts...) })
		if cerr != nil {
			return nil, cerr
		}
		return c.Open(ctx, p)
	}
}

// Cluster opens the drivers of one cluster's plans. They share one
// connection pool and, unless WithDirectReads, one informer cache: the
// watches of a namespace start when its first plan is opened, and Close
// stops them.
type Cluster struct {
	c     clients
	o     options
	read  reader
	cache *informerCache // nil with WithDirectReads
	index *planIndex
}

// NewCluster returns the Cluster of cfg. It does not contact the API
// server.
func NewCluster(cfg *rest.Config, opts ...Option) (*Cluster, error) {
	c, err := newClients(cfg)
	if err != nil {
		return nil, err
	}
	o := newOptions(opts)
	cl := &Cluster{c: c, o: o, read: apiReader{c}}
	if o.direct {
		return cl, nil
	}
	// The informers' list and watch requests get a rate limiter of their
	// own: starting the watches of many namespaces must not hold up a
	// rollback's writes.
	ic, err := newClients(cfg)
	if err != nil {
		return nil, err
	}
	cl.index = newPlanIndex(o.wake)
	cl.cache = newInformerCache(ic, o.namespaces, cl.index, o.log)
	cl.read = cacheReader{cl.cache}
	return cl, nil
}

// Open returns the driver of p's workloads. With the informer cache it
// starts the watches the plan needs in its namespace, without waiting for
// them: the driver's first read does, within its ctx.
func (cl *Cluster) Open(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open the kubernetes driver: %w", err)
	}
	d, err := newDriver(cl.c, cl.read, cl.index, p, cl.o)
	if err != nil {
		return nil, err
	}
	if cl.cache == nil {
		return d, nil
	}
	for _, k := range d.watched() {
		if k.kind == "jobs" {
			continue // on the plan's first job
		}
		// A watch that cannot start (the cache closed) fails the
		// driver's reads, which say why.
		_, _ = cl.cache.start(d.ns, k.kind)
	}
	cl.index.register(d)
	return d, nil
}

// Close stops the cluster's informers. Its drivers fail after it.
func (cl *Cluster) Close() error {
	if cl.cache != nil {
		cl.cache.close()
	}
	return nil
}

func newDriver(c clients, read reader, index *planIndex, p *plan.Plan, o options) (*Driver, error) {
	if p == nil {
		return nil, errors.New("kubernetes driver: no plan")
	}
	k := p.Spec.Driver.Kubernetes
	if k == nil {
		name := p.Spec.Driver.Name()
		if name == "" {
			name = "no"
		}
		return nil, fmt.Errorf("plan %s has %s driver, not kubernetes", p.Metadata.Name, name)
	}
	switch {
	case k.Stable.Deployment == "":
		return nil, fmt.Errorf("plan %s: spec.driver.kubernetes.stable.deployment is empty", p.Metadata.Name)
	case k.Candidate.Deployment == "":
		return nil, fmt.Errorf("plan %s: spec.driver.kubernetes.candidate.deployment is empty", p.Metadata.Name)
	case k.Stable.Deployment == k.Candidate.Deployment:
		return nil, fmt.Errorf("plan %s: stable and candidate are the same Deployment %s", p.Metadata.Name, k.Stable.Deployment)
	}
	d := &Driver{
		kube:      c.kube,
		gw:        c.gw,
		metrics:   c.metrics,
		dyn:       c.dyn,
		read:      read,
		api:       apiReader{c},
		index:     index,
		plan:      p.Metadata.Name,
		ns:        k.Namespace,
		stable:    k.Stable.Deployment,
		candidate: k.Candidate.Deployment,
		flags:     o.flags(p.Metadata.Name),
		clock:     o.clock,
		log:       o.log,
		instance:  o.instance,
		logs:      map[string]string{},

		readyTimeout: o.ready,
	}
	if d.ns == "" {
		d.ns = o.namespace
	}
	if len(o.namespaces) > 0 && !slices.Contains(o.namespaces, d.ns) {
		what := "its namespace"
		if k.Namespace == "" {
			what = "the default namespace"
		}
		return nil, fmt.Errorf("plan %s: %s %q is not one the daemon may act in: kubernetes.namespaces lists %s",
			p.Metadata.Name, what, d.ns, strings.Join(o.namespaces, ", "))
	}
	if k.Traffic != nil {
		d.route = k.Traffic.Route()
	}
	r, err := openRouter(d, k.Traffic)
	if err != nil {
		return nil, err
	}
	d.router = r
	return d, nil
}

// Close releases the driver's place among the objects whose changes wake
// a plan, unless a newer driver of the plan took it. The cache stays: it
// is the cluster's.
func (d *Driver) Close() error {
	if d.index != nil {
		d.index.release(d)
	}
	return nil
}

// Namespace returns the namespace of the workloads.
func (d *Driver) Namespace() string { return d.ns }

// Tolerance is how many percentage points the observed traffic can be off a
// target: 0 with a route, whose weights are exact; with a replica
// ratio, the worst rounding the total capacity allows (with 10 replicas,
// shares go by 10 points and a 5% target gets one replica, 10%), as of the
// last Observe or Apply.
func (d *Driver) Tolerance() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tolerance
}

func (d *Driver) setTolerance(total int) {
	if d.routed() {
		return
	}
	t := traffic.RatioTolerance(total)
	d.mu.Lock()
	d.tolerance = t
	d.mu.Unlock()
}

// Observe reports the Deployments' replicas, the split as the route (or
// the ready replicas) shows it, and the published flags.
func (d *Driver) Observe(ctx context.Context) (drivers.State, error) {
	if err := ctx.Err(); err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	w, err := d.workloads(ctx)
	if err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	st := w.state()
	d.setTolerance(w.total(d.routed()))
	sp, err := d.router.Observe(ctx, w)
	if err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	st.Traffic, st.Mirror = sp.Traffic, sp.Mirror
	if !d.routed() {
		st.ReplicaTotal = w.total(false)
	}
	flags, err := d.readFlags(ctx)
	if err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	st.Flags = flags
	return st, nil
}

// Apply brings about target: the replicas and the split in
// traffic.Shift's order, then an Event on both Deployments.
//
// With the informer cache, Apply reads the Deployments and autoscalers
// from it: their writes are server-side applies that send no
// resourceVersion, so what was read decides only whether to write, and a
// change the cache has not shown yet wakes the plan, whose next step
// writes again. What a write conditions on a resourceVersion (the route's
// rules, a scale subresource) and what would be wrong to act on late (a
// Job to remove) is read fresh from the API server.
func (d *Driver) Apply(ctx context.Context, target drivers.Target) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply to %s: %w", d.plan, err)
	}
	if target.Decommission && target.Traffic != 100 {
		return fmt.Errorf("apply to %s: decommissioning stable needs all traffic on the candidate, not %d%%", d.plan, target.Traffic)
	}
	w, err := d.workloads(ctx)
	if err != nil {
		return fmt.Errorf("apply to %s: %w", d.plan, err)
	}
	total := w.total(d.routed())
	rs := replicasFor(target, total, d.routed())
	if err := d.shift(ctx, w, rs, total, traffic.Split{Traffic: target.Traffic, Mirror: target.Mirror}); err != nil {
		return fmt.Errorf("apply to %s: %w", d.plan, err)
	}
	d.setTolerance(total)
	d.event(ctx, w, reasonFor(target), describeApply(target, rs, d.route))
	return nil
}

// routed reports whether a router carries the split, rather than the
// replica ratio.
func (d *Driver) routed() bool { return d.route != "" }

// shift moves the workloads to rs and the router to sp, by traffic.Shift.
func (d *Driver) shift(ctx context.Context, w workloads, rs replicas, total int, sp traffic.Split) error {
	sides := &sides{d: d, total: total, final: rs}
	return traffic.Shift[workloads](ctx, sides, d.router, w, sp, traffic.Replicas{Stable: rs.Stable, Candidate: rs.Candidate})
}

// sides are the two Deployments as traffic.Shift scales them, at a
// capacity of total, towards final.
type sides struct {
	d     *Driver
	total int
	final replicas
}

func (s *sides) Replicas(w workloads) traffic.Replicas {
	return traffic.Replicas{Stable: w.stable.replicas(), Candidate: w.candidate.replicas()}
}

// Scale applies r. The decommission mark stays as it is until the final
// step.
func (s *sides) Scale(ctx context.Context, w workloads, r traffic.Replicas) (workloads, error) {
	rs := replicas{Stable: r.Stable, Candidate: r.Candidate, Decommission: w.stable.Annotations[AnnotationDecommissioned] == "true"}
	if r == (traffic.Replicas{Stable: s.final.Stable, Candidate: s.final.Candidate}) {
		rs.Decommission = s.final.Decommission
	}
	return s.d.scale(ctx, w, rs, s.total)
}

// Ready waits for r ready, within the driver's ready timeout; an
// autoscaled side, for as many as its autoscaler's minReplicas at most.
func (s *sides) Ready(ctx context.Context, r traffic.Replicas) (workloads, error) {
	r, err := s.d.readyTarget(ctx, r)
	if err != nil {
		return workloads{}, err
	}
	return s.d.waitReady(ctx, r)
}

// waitReady waits until both Deployments have at least rs ready, within
// the driver's ready timeout.
func (d *Driver) waitReady(ctx context.Context, rs traffic.Replicas) (workloads, error) {
	timeout := time.NewTimer(d.readyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		w, err := d.workloads(ctx)
		if err != nil {
			return workloads{}, err
		}
		if ready(w.stable, rs.Stable) && ready(w.candidate, rs.Candidate) {
			return w, nil
		}
		select {
		case <-ctx.Done():
			return workloads{}, fmt.Errorf("wait for ready replicas: %w", ctx.Err())
		case <-timeout.C:
			return workloads{}, fmt.Errorf("replicas not ready after %s (stable %d of %d, candidate %d of %d); the route is unchanged",
				d.readyTimeout, w.stable.ready(), rs.Stable, w.candidate.ready(), rs.Candidate)
		case <-tick.C:
		}
	}
}

// ready reports whether a Deployment has observed its spec and has at
// least n replicas ready.
func ready(x deployment, n int) bool {
	return x.Status.ObservedGeneration >= x.Generation && x.ready() >= n
}
