// Package docker drives a plan's stable and candidate containers on a Docker
// engine, through the Engine API.
//
// A workload is the set of containers that a plan's `service` (the Compose
// label com.docker.compose.service) or `container` (a container name
// prefix) selects; a container matching both workloads' prefixes belongs to
// the longer one. Its replicas are its running containers, and a replica is
// ready when it runs and its health check, if it has one, says healthy.
//
// Traffic is split one of two ways, as the plan says:
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
//   - through nginx (traffic.nginx): the driver renders the upstream's
//     servers with weights, and a split_clients share for mirroring, into
//     files the user's nginx configuration includes; checks them with
//     `nginx -t` before swapping them in by rename; and reloads nginx, with
//     SIGHUP through the Engine API when it runs in a container and with a
//     configured command when it runs on the host. Observe reads the split
//     back from the rendered file.
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
// The package does not build or pull the workloads' images (jobs' images are
// pulled when missing), and it does not manage Compose projects: it acts on
// containers, and `docker compose up` run later puts a service back to what
// its Compose file says.
package docker

import (
	"context"
	"errors"
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
var ErrMirrorNeedsRouter = errors.New("mirroring needs a router (traffic.nginx in the plan's docker driver)")

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
	if t := dd.Traffic; t != nil && t.HAProxy != nil {
		// Not a split by replica ratio in its place: the HAProxy router
		// joins the driver with its table of routers.
		return nil, fmt.Errorf("plan %s routes through HAProxy, which this driver does not carry yet", d.plan)
	}
	if t := dd.Traffic; t != nil && t.Nginx != nil {
		if !upstreamName.MatchString(t.Nginx.Upstream) {
			return nil, fmt.Errorf("plan %s: nginx upstream %q: want letters, digits, '_', '.' and '-'", d.plan, t.Nginx.Upstream)
		}
		if e.opts.NginxDir == "" {
			return nil, fmt.Errorf("plan %s routes through nginx, but the daemon has no nginx folder configured to render into", d.plan)
		}
		d.nginx = &nginxRoute{upstream: t.Nginx.Upstream, container: t.Nginx.Container, dir: e.opts.NginxDir}
		claims = append(claims, d.nginx.httpPath())
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
	if d.nginx != nil {
		if err := d.renderInitial(ctx); err != nil {
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
	// nginx is the router; nil splits by replica ratio.
	nginx     *nginxRoute
	flagsPath string

	mu sync.Mutex
	// total is the replica total of the replica ratio, once known.
	total int
	// tolerance is the last one worked out, for Tolerance.
	tolerance int
	// unloaded (under mu, which Apply holds) is set when nginx on the
	// host was found not running after new files were written: whether
	// it read them as it started is not known, so the next swap reloads
	// even if the files are as wanted.
	unloaded bool
}

// Tolerance is how many percentage points the observed traffic may be off
// the target: 0 through nginx, whose weights are exact, and by replica ratio
// the worst gap traffic.RatioFor leaves at the replica total, as of the last
// call (Observe also reports the total, so that State.Matches is exact).
func (d *Driver) Tolerance() int {
	if d.nginx != nil {
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
// (from the rendered nginx file, or from the running replicas) and the
// published flags.
func (d *Driver) Observe(ctx context.Context) (drivers.State, error) {
	if err := ctx.Err(); err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	ws, err := d.load(ctx)
	if err != nil {
		return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
	}
	st := ws.state()
	if d.nginx == nil {
		c := len(ws.cand.running())
		st.Traffic = traffic.Share(c, len(ws.stable.running())+c)
		d.mu.Lock()
		st.ReplicaTotal = d.replicaTotal(ws)
		d.tolerance = traffic.RatioTolerance(st.ReplicaTotal)
		d.mu.Unlock()
	} else {
		if d.nginx.container != "" && ws.router == nil {
			return drivers.State{}, fmt.Errorf("observe %s: nginx container %s not found", d.plan, d.nginx.container)
		}
		split, err := d.nginx.observe(ws, d.backendAddr(ws.router))
		if err != nil {
			return drivers.State{}, fmt.Errorf("observe %s: %w", d.plan, err)
		}
		st.Traffic, st.Mirror = split.traffic, split.mirror
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

// Apply brings about t: it scales the workloads, then renders and reloads
// nginx when there is a router, then decommissions.
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
	switch {
	case t.Traffic < 0 || t.Traffic > 100 || t.Mirror < 0 || t.Mirror > 100:
		return fmt.Errorf("traffic and mirror must be within 0..100")
	case t.Decommission && t.Traffic < 100:
		return fmt.Errorf("stable cannot be decommissioned while it takes %d%% of the traffic", 100-t.Traffic)
	case t.Mirror > 0 && d.nginx == nil:
		return ErrMirrorNeedsRouter
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ws, err := d.load(ctx)
	if err != nil {
		return err
	}
	if d.nginx == nil {
		return d.applyRatio(ctx, ws, t, want)
	}
	return d.applyRouted(ctx, ws, t, want)
}

// applyRatio scales the workloads to traffic.RatioFor's split of the
// replica total (a snapshot's counts, when restoring one): up first, so
// that capacity never dips, then down.
func (d *Driver) applyRatio(ctx context.Context, ws *workloads, t drivers.Target, want *counts) error {
	n := d.replicaTotal(ws)
	d.tolerance = traffic.RatioTolerance(n)
	r := traffic.RatioFor(t.Traffic, n)
	s, c := r.Stable, r.Candidate
	if want != nil {
		s, c = want.stable, want.candidate
	}
	if t.Decommission {
		s = 0
	}
	if err := d.scaleUp(ctx, ws.cand, c); err != nil {
		return err
	}
	if err := d.scaleUp(ctx, ws.stable, s); err != nil {
		return err
	}
	if err := d.scaleDown(ctx, ws.cand, c); err != nil {
		return err
	}
	if t.Decommission {
		return d.decommission(ctx, ws.stable)
	}
	return d.scaleDown(ctx, ws.stable, s)
}

// applyRouted makes sure each workload that takes requests runs, renders
// and reloads nginx, then decommissions stable if asked: nginx stops sending
// to a container before it goes.
func (d *Driver) applyRouted(ctx context.Context, ws *workloads, t drivers.Target, want *counts) error {
	if ws.router == nil && d.nginx.container != "" {
		return fmt.Errorf("nginx container %s not found", d.nginx.container)
	}
	if ws.router != nil && !ws.router.running {
		return fmt.Errorf("nginx container %s is not running", ws.router.name)
	}
	sWant, cWant := len(ws.stable.running()), len(ws.cand.running())
	if want != nil {
		sWant, cWant = want.stable, want.candidate
	}
	if (t.Traffic > 0 || t.Mirror > 0) && cWant == 0 {
		cWant = d.baseReplicas(ws.cand)
	}
	if !t.Decommission && t.Traffic < 100 && sWant == 0 {
		sWant = d.baseReplicas(ws.stable)
	}
	if !t.Decommission && sWant == 0 && len(ws.stable.members) == 0 {
		// Back from a decommission: stable runs again.
		sWant = d.baseReplicas(ws.stable)
	}
	if err := d.scaleUp(ctx, ws.cand, cWant); err != nil {
		return err
	}
	if err := d.scaleUp(ctx, ws.stable, sWant); err != nil {
		return err
	}
	ws, err := d.load(ctx)
	if err != nil {
		return err
	}
	stable := ws.stable.running()
	if t.Decommission {
		stable = nil
	}
	if err := d.route(ctx, ws, t, stable, ws.cand.running()); err != nil {
		return err
	}
	if err := d.scaleDown(ctx, ws.cand, cWant); err != nil {
		return err
	}
	if t.Decommission {
		return d.decommission(ctx, ws.stable)
	}
	return d.scaleDown(ctx, ws.stable, sWant)
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
