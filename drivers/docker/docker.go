// Package docker drives a plan's stable and candidate containers on a Docker
// engine, through the Engine API.
//
// A workload is the set of containers that a plan's `service` (the Compose
// label com.docker.compose.service) or `container` (a container name
// prefix) selects; a container matching both workloads' prefixes belongs to
// the longer one. Its replicas are its running containers, and a replica is
// ready when it runs and its health check, if it has one, says healthy.
//
// Traffic is split one of three ways, as the plan says:
//
//   - by replica ratio (no traffic block): the candidate's share is its share
//     of the running containers. The driver scales each workload by starting
//     containers cloned from one of its own (same image, command, labels,
//     mounts and networks; published ports move to free host ports) and by
//     removing containers, and reports the share it achieved, which is the
//     nearest the replica total allows. The total comes from the label
//     migrate.hal9.ai/replicas on the workloads' containers, else
//     Options.Replicas, else the number running when the driver first acts.
//     Tolerance says how far off a share can be. It cannot mirror.
//
//   - through nginx (traffic.nginx): the driver renders the upstream's
//     servers with weights, and a split_clients share for mirroring, into
//     files the user's nginx configuration includes; checks them with
//     `nginx -t` before swapping them in by rename; and reloads nginx, with
//     SIGHUP through the Engine API when it runs in a container and with a
//     configured command when it runs on the host. Observe reads the split
//     back from the rendered file.
//
//   - through HAProxy on the host (traffic.haproxy): the driver adds, weighs
//     and removes the backend's servers through HAProxy's runtime API, with
//     no reload, and reads them back from it. It cannot mirror.
//
// Each router is one file implementing traffic.Router over the driver's
// view of its workloads, behind the routers table (router.go); the
// replicas and the split change together in traffic.Shift's order.
//
// Scaling a workload to zero stops its last container rather than removing
// it, so that it can be cloned again; decommissioning removes them all,
// after keeping a created, never started copy as the template to come back
// from.
//
// Jobs (run phases and verify checks) are one-off containers labelled with
// their id, left in place after they exit so that their outcome and logs
// stay readable, until the reconciler has recorded them and removes them
// (RemoveJob). Feature flags are an OpenFeature flagd flag-definition file.
//
// Usage (usage.go) reads the Engine API's stats of a side's running
// containers, all at once, each within five seconds. The engine answers
// with two readings a second apart; from one that gives one, the driver
// takes the second itself. CPU is the CPU time used per second between
// them, in percent of the container's limit: NanoCPUs, else the CFS quota
// over its period, else the machine's online CPUs. Memory is the usage less
// the page cache the kernel can reclaim, as `docker stats` counts it, in
// percent of the limit the engine reports, the machine's memory for a
// container without one. A container that stops meanwhile is left out.
//
// The package does not build or pull the workloads' images (jobs' images are
// pulled when missing), and it does not manage Compose projects: it acts on
// containers, and `docker compose up` run later puts a service back to what
// its Compose file says.
package docker

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/plan"
)

// Labels the driver reads on the workloads' containers, and sets on the
// containers it creates.
const (
	// LabelPort, set by the user, names the container port nginx sends
	// requests to ("8080"), when the image exposes more than one.
	LabelPort = "migrate.hal9.ai/port"
	// LabelReplicas, set by the user, is the replica total split between
	// stable and candidate by replica ratio ("4").
	LabelReplicas = "migrate.hal9.ai/replicas"

	// LabelPlan names the plan of every container the driver creates.
	LabelPlan = "migrate.hal9.ai/plan"
	// LabelRole says what the driver created a container as: RoleClone,
	// RoleTemplate or RoleJob.
	LabelRole = "migrate.hal9.ai/role"
	// LabelJob is a job container's id; LabelTimeout its run timeout.
	LabelJob     = "migrate.hal9.ai/job"
	LabelTimeout = "migrate.hal9.ai/timeout"
)

// The roles of LabelRole.
const (
	RoleClone    = "clone"
	RoleTemplate = "template"
	RoleJob      = "job"
)

// Compose's labels.
const (
	composeService = "com.docker.compose.service"
	composeProject = "com.docker.compose.project"
	composeNumber  = "com.docker.compose.container-number"
)

// ErrMirrorNeedsRouter is returned by Apply for a mirrored share when the
// plan splits traffic by replica ratio: only a router can copy requests.
var ErrMirrorNeedsRouter = fmt.Errorf("%w by replica ratio: mirroring needs a router (traffic.nginx in the plan's docker driver)", traffic.ErrCannotMirror)

// Options configure the driver. The daemon fills them from its
// configuration; the zero value works for plans that split by replica ratio
// and publish no flags, against the engine that DOCKER_HOST names.
type Options struct {
	// Client talks to the engine; nil makes one from Host, or from the
	// environment (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) when
	// Host is empty.
	Client client.APIClient
	Host   string

	// ComposeProject, if set, restricts `service` workloads to that
	// Compose project. Without it a service found in two projects is an
	// error.
	ComposeProject string
	// Replicas is the replica total split by replica ratio when the
	// containers carry no LabelReplicas; 0 keeps the number running.
	Replicas int
	// Labels are added to every container the driver creates.
	Labels map[string]string
	// StopTimeout is how long a container gets to stop before it is
	// killed, when it is scaled away (default 10s).
	StopTimeout time.Duration

	// FlagsPath is where a plan's flags are written, as flagd's
	// flag-definition JSON; "{plan}" in it is replaced by the plan's name,
	// so one path serves every plan. Empty: PublishFlags fails.
	FlagsPath string

	// NginxDir is the folder, as this process sees it, that the rendered
	// nginx files go to: UPSTREAM.http.conf (upstreams and split_clients,
	// for the http block) and UPSTREAM.server.conf (the mirror, for the
	// server block). Required by plans with traffic.nginx.
	NginxDir string
	// NginxRouterDir is the same folder as the nginx container sees it.
	// Empty: the router's mount of NginxDir, if it has one, else NginxDir.
	NginxRouterDir string
	// NginxBinary is the nginx command, on the host for a router on the
	// host (default "nginx"), in the container for a router in a
	// container (default "nginx").
	NginxBinary string
	// NginxTest checks the whole configuration of nginx on the host after
	// the swap (default NginxBinary -t -q); a non-nil empty slice skips it.
	NginxTest []string
	// NginxReload reloads nginx on the host (default NginxBinary -s
	// reload).
	NginxReload []string

	// HAProxyRuntimeAPI is where the runtime API of HAProxy on the host
	// listens, at admin level: a unix socket path, or a loopback
	// HOST:PORT. Required by plans with traffic.haproxy, whose backend's
	// servers the driver changes through it.
	HAProxyRuntimeAPI string

	// JobLogLines is how many lines of a job's output JobStatus keeps
	// (default 50).
	JobLogLines int
	// Clock times jobs (default the real clock).
	Clock clock.PassiveClock
	Log   *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.NginxBinary == "" {
		o.NginxBinary = "nginx"
	}
	if o.NginxTest == nil {
		o.NginxTest = []string{o.NginxBinary, "-t", "-q"}
	}
	if o.NginxReload == nil {
		o.NginxReload = []string{o.NginxBinary, "-s", "reload"}
	}
	if o.JobLogLines <= 0 {
		o.JobLogLines = 50
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Engine opens drivers for the plans of one Docker engine. Create one with
// New; Open is a drivers.Opener.
type Engine struct {
	opts   Options
	cli    client.APIClient
	closes bool

	mu     sync.Mutex
	claims map[string]string // a file a plan writes → the plan
}

// New returns an Engine for opts. It does not contact the engine: Open does.
func New(opts Options) (*Engine, error) {
	opts = opts.withDefaults()
	e := &Engine{opts: opts, cli: opts.Client, claims: map[string]string{}}
	if e.cli == nil {
		copts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
		if opts.Host != "" {
			copts = append(copts, client.WithHost(opts.Host))
		}
		cli, err := client.New(copts...)
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		e.cli, e.closes = cli, true
	}
	return e, nil
}

// Close releases the client New made.
func (e *Engine) Close() error {
	if e.closes {
		return e.cli.Close()
	}
	return nil
}

var _ drivers.Opener = (*Engine)(nil).Open

// upstreamName is what an nginx upstream name may be here: it names files
// and variables too.
var upstreamName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Open returns the driver of p's docker workloads. It checks the engine
// answers and the plan's settings are usable; with a router, it renders the
// router's files when none exist yet (all traffic to stable), so that nginx
// can start with them.
func (e *Engine) Open(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
	dd := p.Spec.Driver.Docker
	if dd == nil {
		return nil, fmt.Errorf("plan %s has no docker driver block", p.Metadata.Name)
	}
	d := &Driver{
		plan:   p.Metadata.Name,
		opts:   e.opts,
		cli:    e.cli,
		stable: selector{role: roleStable, service: dd.Stable.Service, prefix: dd.Stable.Container},
		cand:   selector{role: roleCandidate, service: dd.Candidate.Service, prefix: dd.Candidate.Container},
	}
	if d.stable == d.cand.withRole(roleStable) {
		return nil, fmt.Errorf("plan %s: stable and candidate name the same workload (%s)", d.plan, d.stable)
	}
	if d.stable.empty() || d.cand.empty() {
		return nil, fmt.Errorf("plan %s: stable and candidate each need a service or a container", d.plan)
	}
	var claims []string
	if e.opts.FlagsPath != "" {
		d.flagsPath = strings.ReplaceAll(e.opts.FlagsPath, "{plan}", d.plan)
		claims = append(claims, d.flagsPath)
	}
	r, err := openRouter(d, dd.Traffic)
	if err != nil {
		return nil, err
	}
	d.router = r
	_, d.byReplicas = r.(*traffic.ByReplicas[*workloads])
	if h, ok := r.(housed); ok {
		d.routerContainer = h.container()
	}
	if c, ok := r.(claimer); ok {
		claims = append(claims, c.claims()...)
	}
	if err := e.claim(d.plan, claims); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open the docker driver of %s: %w", d.plan, err)
	}
	if _, err := e.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return nil, fmt.Errorf("open the docker driver of %s: the engine does not answer: %w", d.plan, err)
	}
	if st, ok := r.(starter); ok {
		if err := st.start(ctx); err != nil {
			return nil, fmt.Errorf("open the docker driver of %s: %w", d.plan, err)
		}
	}
	return d, nil
}

// claim records that plan writes files, and fails if another plan of this
// engine writes one of them.
func (e *Engine) claim(planName string, files []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range files {
		key := filepath.Clean(f)
		if other, ok := e.claims[key]; ok && other != planName {
			return fmt.Errorf("plan %s would write %s, which plan %s writes already", planName, f, other)
		}
	}
	for _, f := range files {
		e.claims[filepath.Clean(f)] = planName
	}
	return nil
}

var (
	_ drivers.Driver       = (*Driver)(nil)
	_ drivers.Checkpointer = (*Driver)(nil)
	_ drivers.JobRemover   = (*Driver)(nil)
)

// Driver drives one plan's workloads. It is safe for concurrent use; calls
// that change the workloads are serialised.
type Driver struct {
	plan   string
	opts   Options
	cli    client.APIClient
	stable selector
	cand   selector
	// router carries the split; byReplicas says it is the replica ratio.
	router     router
	byReplicas bool
	// routerContainer names the router's container; empty when it runs
	// on the host or there is none.
	routerContainer string
	flagsPath       string

	mu sync.Mutex
	// total is the replica total of the replica ratio, once known.
	total int
	// tolerance is the last one worked out, for Tolerance.
	tolerance int
}

// Tolerance is how many percentage points the observed traffic may be off
// the target: 0 through a router, whose weights are exact, and by replica ratio
// the worst gap traffic.RatioFor leaves at the replica total, as of the last
// call (Observe also reports the total, so that State.Matches is exact).
func (d *Driver) Tolerance() int {
	if !d.byReplicas {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tolerance == 0 {
		return 100
	}
	return d.tolerance
}

// Observe reports the replicas and readiness of both workloads, the split
// as the router (or the running replicas) shows it, and the published
// flags.
func (d *Driver) Observe(ctx context.Context) (drivers.State, error) {
	if err := ctx.Err(); err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	ws, err := d.load(ctx)
	if err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	st := ws.state()
	sp, err := d.router.Observe(ctx, ws)
	if err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	st.Traffic, st.Mirror = sp.Traffic, sp.Mirror
	if d.byReplicas {
		d.mu.Lock()
		st.ReplicaTotal = d.replicaTotal(ws)
		d.tolerance = traffic.RatioTolerance(st.ReplicaTotal)
		d.mu.Unlock()
	}
	if d.flagsPath != "" {
		flags, err := readFlags(d.flagsPath)
		if err != nil {
			return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
		}
		st.Flags = flags
	}
	return st, nil
}

// Apply brings about t: the replicas and the split in traffic.Shift's
// order, stable decommissioned last.
func (d *Driver) Apply(ctx context.Context, t drivers.Target) error {
	if err := d.apply(ctx, t, nil); err != nil {
		return fmt.Errorf("apply traffic %d%% mirror %d%% to %s: %w", t.Traffic, t.Mirror, d.plan, err)
	}
	return nil
}

// counts are explicit replica counts, from a snapshot.
type counts struct{ stable, candidate int }

func (d *Driver) apply(ctx context.Context, t drivers.Target, want *counts) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.Decommission && t.Traffic < 100 {
		return fmt.Errorf("stable cannot be decommissioned while it takes %d%% of the traffic", 100-t.Traffic)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ws, err := d.load(ctx)
	if err != nil {
		return err
	}
	rs := d.replicasFor(ws, t, want)
	s := &sides{d: d, final: rs, decommission: t.Decommission}
	return traffic.Shift[*workloads](ctx, s, d.router, ws, traffic.Split{Traffic: t.Traffic, Mirror: t.Mirror}, rs)
}

// replicasFor is how many containers each side runs at t (a snapshot's
// counts, when restoring one).
//
// By replica ratio they are traffic.RatioFor's split of the replica total.
// Through a router each side keeps what runs, but one that must take
// requests and runs nothing gets its base replicas, and stable comes back
// from a decommission the same way.
func (d *Driver) replicasFor(ws *workloads, t drivers.Target, want *counts) traffic.Replicas {
	var r traffic.Replicas
	switch {
	case d.byReplicas:
		n := d.replicaTotal(ws)
		d.tolerance = traffic.RatioTolerance(n)
		split := traffic.RatioFor(t.Traffic, n)
		r = traffic.Replicas{Stable: split.Stable, Candidate: split.Candidate}
	default:
		r = traffic.Replicas{Stable: len(ws.stable.running()), Candidate: len(ws.cand.running())}
	}
	if want != nil {
		r = traffic.Replicas{Stable: want.stable, Candidate: want.candidate}
	}
	if !d.byReplicas {
		if (t.Traffic > 0 || t.Mirror > 0) && r.Candidate == 0 {
			r.Candidate = d.baseReplicas(ws.cand)
		}
		if !t.Decommission && r.Stable == 0 && (t.Traffic < 100 || len(ws.stable.members) == 0) {
			r.Stable = d.baseReplicas(ws.stable)
		}
	}
	if t.Decommission {
		r.Stable = 0
	}
	return r
}

// sides are the two workloads as traffic.Shift scales them, towards final.
type sides struct {
	d            *Driver
	final        traffic.Replicas
	decommission bool
}

func (s *sides) Replicas(ws *workloads) traffic.Replicas {
	return traffic.Replicas{Stable: len(ws.stable.running()), Candidate: len(ws.cand.running())}
}

// Scale starts and clones containers, then stops and removes them, the
// candidate's first; at the final count a decommission removes stable
// altogether. It returns the workloads as they are then.
func (s *sides) Scale(ctx context.Context, ws *workloads, r traffic.Replicas) (*workloads, error) {
	d := s.d
	decommission := s.decommission && r == s.final
	if s.Replicas(ws) == r && (!decommission || len(ws.stable.members) == 0) {
		return ws, nil
	}
	if err := d.scaleUp(ctx, ws.cand, r.Candidate); err != nil {
		return nil, err
	}
	if err := d.scaleUp(ctx, ws.stable, r.Stable); err != nil {
		return nil, err
	}
	if err := d.scaleDown(ctx, ws.cand, r.Candidate); err != nil {
		return nil, err
	}
	var err error
	if decommission {
		err = d.decommission(ctx, ws.stable)
	} else {
		err = d.scaleDown(ctx, ws.stable, r.Stable)
	}
	if err != nil {
		return nil, err
	}
	return d.load(ctx)
}

// Ready reads the workloads again: scaleUp returns once the containers it
// started run.
func (s *sides) Ready(ctx context.Context, _ traffic.Replicas) (*workloads, error) {
	return s.d.load(ctx)
}

// replicaTotal is the replica total of the replica ratio: the label, the
// option, or the number running the first time the driver looked.
func (d *Driver) replicaTotal(ws *workloads) int {
	if n := ws.labelledTotal(); n > 0 {
		return n
	}
	if d.opts.Replicas > 0 {
		return d.opts.Replicas
	}
	if d.total == 0 {
		d.total = max(1, len(ws.stable.running())+len(ws.cand.running()))
	}
	return d.total
}

// baseReplicas is how many replicas a workload that must take requests
// gets through nginx when none runs: the label, the option, or one.
func (d *Driver) baseReplicas(w *workload) int {
	if n := w.labelledReplicas(); n > 0 {
		return n
	}
	if d.opts.Replicas > 0 {
		return d.opts.Replicas
	}
	return 1
}

// PublishFlags writes flags as the plan's flagd file.
func (d *Driver) PublishFlags(ctx context.Context, flags map[string]int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish the flags of %s: %w", d.plan, err)
	}
	if d.flagsPath == "" {
		return fmt.Errorf("publish the flags of %s: the daemon has no flags path configured", d.plan)
	}
	if err := writeFlags(d.flagsPath, flags); err != nil {
		return fmt.Errorf("publish the flags of %s: %w", d.plan, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
