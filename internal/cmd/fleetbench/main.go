// Command fleetbench runs one progressive-delivery controller on a fleet of
// canaries on the test control plane (scripts/k8s-testenv.sh) and measures
// it: API requests and CPU at rest, peak memory, the time from a change of
// target to the controller's first write to the workloads, and the wall
// time of the whole fleet's canaries. The controller is either the Argo
// Rollouts controller (-tool argo) or hal9-migrate's daemon (-tool hal9),
// on the same workload, measured by the same code; scripts/bench-fleet.sh
// runs both and prints them side by side (-report).
//
// It does not build or start the control plane or the controllers'
// binaries (the script does), and it leaves its namespace behind: the
// control plane is stopped after the run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() { os.Exit(Main()) }

// Main runs the command and returns its exit status, printing an error
// once.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		return 1
	}
	return 0
}

// tool is one controller under test.
type tool interface {
	name() string
	// start makes the fleet at its first version, starts the
	// controller, and returns once every migration rests there.
	start(ctx context.Context) error
	pid() int
	// change moves the target of the migrations of idx forward (or back
	// to where they started), recording each one's change time in the
	// fleet as it is made.
	change(ctx context.Context, idx []int, forward bool) error
	// reset brings the migrations of idx back where they started, for a
	// tool whose next change could not otherwise walk them again.
	reset(ctx context.Context, idx []int) error
	stop()
}

// spanner is a tool that reports where its time went: the p50 duration
// of each kind of span it traced since a time, in seconds.
type spanner interface {
	spans(ctx context.Context, since time.Time) (map[string]float64, error)
}

// bench is one run: the settings, the clients, the fleet's timings.
type bench struct {
	n, reactions, replicas     int
	pause, rest, settle, pace  time.Duration
	setupTimeout, phaseTimeout time.Duration
	ns, dir                    string
	adminKubeconfig, pki       string
	userKubeconfig, user       string
	argoBin, hal9Bin           string
	hal9Poll, hal9Interval     string
	nodes                      int
	// writesOnly ends the reaction phase once every reaction migration
	// has been written to, without waiting for their canaries.
	writesOnly bool
	kube       kubernetes.Interface
	// adminCfg is the harness's own: its requests never count as a
	// controller's.
	adminCfg *rest.Config
	fleet    *fleet
	progress func(format string, args ...any)
}

func runMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fleetbench", flag.ContinueOnError)
	var (
		b      bench
		which  string
		out    string
		report bool
		ver    string
	)
	fs.StringVar(&which, "tool", "", "the controller: argo or hal9")
	fs.IntVar(&b.n, "n", 1000, "canaries in the fleet")
	fs.IntVar(&b.reactions, "reactions", 100, "migrations whose reaction time is measured, changed one at a time")
	fs.IntVar(&b.replicas, "replicas", 1, "replicas of each workload")
	fs.IntVar(&b.nodes, "nodes", 3, "fake nodes of 1,000 pods each to make sure of")
	fs.DurationVar(&b.pause, "pause", 10*time.Second, "the pause (Argo) and soak (hal9-migrate) after each canary step")
	fs.DurationVar(&b.rest, "rest", 30*time.Second, "the window over which requests and CPU at rest are measured")
	fs.DurationVar(&b.settle, "settle", 20*time.Second, "the wait between the fleet being up and the window at rest")
	fs.DurationVar(&b.pace, "pace", time.Second, "the time between two changes of the reaction measurement")
	fs.DurationVar(&b.setupTimeout, "setup-timeout", 10*time.Minute, "the longest setup may take")
	fs.DurationVar(&b.phaseTimeout, "phase-timeout", 8*time.Minute, "the longest the reactions or the fleet may take")
	fs.StringVar(&b.adminKubeconfig, "kubeconfig", os.Getenv("HAL9_TEST_KUBECONFIG"), "the test apiserver's admin kubeconfig")
	fs.StringVar(&b.pki, "pki", "", "the test CA's directory (default: pki beside the kubeconfig)")
	fs.StringVar(&b.dir, "dir", "", "the work directory (logs, repository, data)")
	fs.StringVar(&b.argoBin, "argo-bin", "", "the rollouts-controller binary")
	fs.StringVar(&b.hal9Bin, "hal9-bin", "", "the hal9-migrate binary")
	fs.StringVar(&b.hal9Poll, "hal9-poll", "1m", "the daemon's --poll (pushes reach it through POST /api/v1/sync at once)")
	fs.StringVar(&b.hal9Interval, "hal9-interval", "30s", "the daemon's --interval")
	fs.BoolVar(&b.writesOnly, "reactions-writes-only", false, "end the reaction phase at the last first write, not when those canaries complete (saves minutes where a canary takes long)")
	fs.StringVar(&ver, "tool-version", "", "the controller's version, for the result")
	fs.StringVar(&out, "o", "", "write the result as JSON to this file")
	fs.BoolVar(&report, "report", false, "print the results in the JSON files named as arguments side by side")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if report {
		return printReport(os.Stdout, fs.Args())
	}
	b.progress = func(format string, args ...any) { log.Printf(which+": "+format, args...) }

	var t tool
	switch which {
	case "argo":
		if b.argoBin == "" {
			return errors.New("-argo-bin is needed")
		}
		t = &argo{b: &b}
	case "hal9":
		if b.hal9Bin == "" {
			return errors.New("-hal9-bin is needed")
		}
		t = &hal9{b: &b}
	default:
		return fmt.Errorf("-tool %q: want argo or hal9", which)
	}
	if b.adminKubeconfig == "" || b.dir == "" {
		return errors.New("-kubeconfig (or HAL9_TEST_KUBECONFIG) and -dir are needed")
	}
	if b.pki == "" {
		b.pki = filepath.Join(filepath.Dir(b.adminKubeconfig), "pki")
	}
	b.reactions = min(b.reactions, b.n)
	b.ns, b.user = "bench-"+which, "fleetbench-"+which
	b.fleet = newFleet(b.n)
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	res, err := b.run(ctx, t)
	if res != nil {
		res.Version = ver
		if out != "" {
			if werr := writeJSON(out, res); werr != nil && err == nil {
				err = werr
			}
		}
		printResults(os.Stdout, []*result{res})
	}
	return err
}

// run measures t: baseline, setup, rest, reactions, the fleet.
func (b *bench) run(ctx context.Context, t tool) (*result, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", b.adminKubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	b.adminCfg = cfg
	if b.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	res := &result{Tool: t.name(), N: b.n, Reactions: b.reactions, Replicas: b.replicas, Pause: b.pause.String(),
		RestWindow: b.rest.String(), Started: time.Now().UTC()}
	if v, err := b.kube.Discovery().ServerVersion(); err == nil {
		res.Kubernetes = v.GitVersion
	}
	defer func() { res.Seconds = time.Since(res.Started).Seconds() }()

	if err := addNodes(ctx, b.kube, b.nodes); err != nil {
		return res, err
	}
	if err := namespace(ctx, b.kube, b.ns); err != nil {
		return res, err
	}
	if b.userKubeconfig, err = identity(ctx, b.kube, b.adminKubeconfig, b.pki, b.dir, b.user); err != nil {
		return res, err
	}

	// The baseline: the control plane with neither controller running.
	b.progress("baseline window, %s", b.rest)
	base, err := b.window(ctx, 0)
	if err != nil {
		return res, err
	}
	res.BaselineRequestsPerMin = base.requests

	b.progress("setup: %d canaries of %d replicas", b.n, b.replicas)
	t0 := time.Now()
	err = t.start(ctx)
	defer t.stop()
	if err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	res.SetupSeconds = time.Since(t0).Seconds()
	// The peak, whichever way the run ends (before the deferred stop).
	defer func() { res.PeakRSSMiB, _, _ = memory(t.pid()); res.LoadAtEnd = loadAverage() }()
	b.progress("up in %.0fs; settling %s", res.SetupSeconds, b.settle)
	if err := sleep(ctx, b.settle); err != nil {
		return res, err
	}
	// At rest means the controller writes nothing: a daemon's first
	// cycle over a thousand plans may still be writing after they are
	// all followed.
	if err := b.waitFor(ctx, "no workload write for "+b.settle.String(), b.setupTimeout, nil, func() (int, bool) {
		q := b.fleet.quietFor(time.Now())
		return int(q.Seconds()), q >= b.settle
	}); err != nil {
		return res, err
	}
	res.SetupSeconds = time.Since(t0).Seconds()

	b.progress("window at rest, %s", b.rest)
	rest, err := b.window(ctx, t.pid())
	if err != nil {
		return res, err
	}
	res.RestRequestsPerMin = rest.byClient
	res.RestAllRequestsPerMin = rest.requests
	res.RestAllMinusBaseline = rest.requests - base.requests
	res.RestCPUSecondsPerMin = rest.cpu
	res.LoadAtRest = loadAverage()
	_, res.RestRSSMiB, _ = memory(t.pid())

	// Reactions: one migration at a time, paced, the fleet otherwise at
	// rest.
	idx := make([]int, b.reactions)
	for k := range idx {
		idx[k] = k
	}
	b.progress("reactions: %d changes, one every %s", len(idx), b.pace)
	reacting := time.Now()
	b.fleet.arm(idx)
	for _, i := range idx {
		if err := t.change(ctx, []int{i}, true); err != nil {
			return res, fmt.Errorf("change %d: %w", i, err)
		}
		if err := sleep(ctx, b.pace); err != nil {
			return res, err
		}
	}
	werr := b.waitFor(ctx, "the reaction canaries complete", b.phaseTimeout, nil, func() (int, bool) {
		w, c := b.fleet.counts(idx)
		if b.writesOnly {
			return w, w == len(idx)
		}
		return c, c == len(idx)
	})
	r := b.fleet.reactions(idx)
	res.ReactionCount = len(r)
	res.ReactionP50, res.ReactionP99, res.ReactionMax = quantile(r, 0.5), quantile(r, 0.99), quantile(r, 1)
	if sp, ok := t.(spanner); ok {
		if res.ReactionSpansP50, err = sp.spans(ctx, reacting); err != nil {
			b.progress("the spans of the reactions: %v", err)
		}
	}
	if werr != nil {
		return res, werr
	}
	b.fleet.disarm(idx)
	if err := t.reset(ctx, idx); err != nil {
		return res, fmt.Errorf("reset the reaction canaries: %w", err)
	}

	// The fleet: every migration's target changed at once.
	all := make([]int, b.n)
	for i := range all {
		all[i] = i
	}
	b.progress("fleet: %d canaries at once", b.n)
	cpu0, _ := cpuSeconds(t.pid())
	b.fleet.arm(all)
	if err := t.change(ctx, all, true); err != nil {
		return res, fmt.Errorf("change the fleet: %w", err)
	}
	werr = b.waitFor(ctx, "the fleet's canaries complete", b.phaseTimeout, nil, func() (int, bool) {
		_, c := b.fleet.counts(all)
		return c, c == len(all)
	})
	wall, each := b.fleet.span(all)
	fr := b.fleet.reactions(all)
	res.FleetWallSeconds = wall
	res.FleetCompleted = len(each)
	res.FleetEachP50, res.FleetEachP99 = quantile(each, 0.5), quantile(each, 0.99)
	res.FleetReactionP50, res.FleetReactionP99 = quantile(fr, 0.5), quantile(fr, 0.99)
	if cpu1, err := cpuSeconds(t.pid()); err == nil {
		res.FleetCPUSeconds = cpu1 - cpu0
	}
	return res, werr
}

// measured is one window: requests per minute (all of them, and the
// controller's own through its FlowSchema), and the controller's CPU
// seconds per minute.
type measured struct {
	requests, byClient, cpu float64
}

// window samples the apiserver and, with pid > 0, that process, over
// b.rest.
func (b *bench) window(ctx context.Context, pid int) (measured, error) {
	a0, err := scrapeAPI(ctx, b.kube)
	if err != nil {
		return measured{}, err
	}
	var c0 float64
	if pid > 0 {
		if c0, err = cpuSeconds(pid); err != nil {
			return measured{}, err
		}
	}
	t0 := time.Now()
	if err := sleep(ctx, b.rest); err != nil {
		return measured{}, err
	}
	a1, err := scrapeAPI(ctx, b.kube)
	if err != nil {
		return measured{}, err
	}
	perMin := time.Minute.Seconds() / time.Since(t0).Seconds()
	m := measured{requests: (a1.Total - a0.Total) * perMin, byClient: (a1.ByFlow[b.user] - a0.ByFlow[b.user]) * perMin}
	if pid > 0 {
		c1, err := cpuSeconds(pid)
		if err != nil {
			return measured{}, err
		}
		m.cpu = (c1 - c0) * perMin
	}
	return m, nil
}

// waitFor polls cond every second until it holds, the controller ends
// (exited closes), ctx ends or timeout passes; it logs progress every 15s.
func (b *bench) waitFor(ctx context.Context, what string, timeout time.Duration, exited <-chan struct{}, cond func() (int, bool)) error {
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for {
		n, ok := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %d after %s", what, n, timeout)
		}
		if time.Since(last) > 15*time.Second {
			b.progress("waiting for %s: %d so far", what, n)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("waiting for %s: the controller exited (see its log in %s)", what, b.dir)
		case <-time.After(time.Second):
		}
	}
}

// loadAverage is the machine's one-minute load average: the run shares
// two cores with whatever else runs.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// freePort is a free TCP port on 127.0.0.1.
func (b *bench) freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// index is the migration a workload name (r-0042, s-0042, c-0042,
// r-0042-<hash>) belongs to; -1 for none.
func index(name string) int {
	parts := strings.Split(name, "-")
	if len(parts) < 2 {
		return -1
	}
	i, err := strconv.Atoi(parts[1])
	if err != nil {
		return -1
	}
	return i
}

// workloadWrite says whether an update is a controller's write to a
// workload, not a status update of kube-controller-manager's: its spec
// (generation), labels or annotations changed.
func workloadWrite(old, cur *metav1.ObjectMeta) bool {
	return old.Generation != cur.Generation || !equalMaps(old.Labels, cur.Labels) || !equalMaps(old.Annotations, cur.Annotations)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// stopProcess ends cmd with SIGTERM, then SIGKILL after 20s.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
