package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/hal9ai/hal9-migrate/tracing"
)

// hal9 runs `hal9-migrate daemon` on n plans in a Git repository served
// by `git daemon` on 127.0.0.1, each plan with the kubernetes driver and
// two Deployments in the namespace (stable with the replicas, the
// candidate with none), phases canary 25/50 with soaks of the pause and
// full, no guardrails. A change of target is a commit moving the plans'
// spec.target to full (or back to start), pushed, then the daemon told
// at once through POST /api/v1/sync, as a forge's push webhook would; the
// first workload write is the daemon's first change to either Deployment.
type hal9 struct {
	b        *bench
	git      *exec.Cmd
	gitDone  chan struct{}
	cmd      *exec.Cmd
	done     chan struct{}
	url      string
	remote   string // the bare repository
	work     string // the harness's clone
	forward  []bool // each plan's target: full (true) or start
	deploys  listersv1.DeploymentLister
	informer cache.SharedIndexInformer
}

const hal9Token = "fleetbench"

func (h *hal9) name() string { return "hal9-migrate" }
func (h *hal9) pid() int     { return h.cmd.Process.Pid }

const startTarget = "target: {phase: canary, percentage: 0}"
const fullTarget = "target: {phase: full}"

func (h *hal9) plan(i int) string {
	return fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: p-%04d}
spec:
  %s
  driver:
    kubernetes:
      namespace: %s
      stable: {deployment: s-%04d}
      candidate: {deployment: c-%04d}
  phases:
    - {name: canary, steps: [25, 50], soak: %s}
    - {name: full, steps: [100]}
`, i, startTarget, h.b.ns, i, i, h.b.pause)
}

func (h *hal9) deployment(name string, replicas int32) (*appsv1.Deployment, error) {
	labels := map[string]any{"app": name}
	var tmpl corev1.PodTemplateSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(podTemplate(labels, 1), &tmpl); err != nil {
		return nil, err
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.b.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas:             &replicas,
			RevisionHistoryLimit: new(int32(1)),
			Selector:             &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template:             tmpl,
		},
	}, nil
}

func (h *hal9) start(ctx context.Context) error {
	b := h.b
	h.forward = make([]bool, b.n)
	h.watch(ctx)
	// The workloads, stable up and the candidate at none, as they stand
	// before a migration.
	r := int32(b.replicas)
	if err := parallel(ctx, b.n, 8, func(i int) error {
		for _, d := range []struct {
			name string
			n    int32
		}{{fmt.Sprintf("s-%04d", i), r}, {fmt.Sprintf("c-%04d", i), 0}} {
			dep, err := h.deployment(d.name, d.n)
			if err != nil {
				return err
			}
			if _, err := b.kube.AppsV1().Deployments(b.ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("create the deployments: %w", err)
	}
	if err := b.waitFor(ctx, "every stable Deployment ready", b.setupTimeout, nil, func() (int, bool) {
		n := 0
		for i := range b.n {
			if h.at(i, false) {
				n++
			}
		}
		return n, n == b.n
	}); err != nil {
		return err
	}

	if err := h.startGit(ctx); err != nil {
		return err
	}
	if err := h.startDaemon(); err != nil {
		return err
	}
	return b.waitFor(ctx, "the daemon following every plan", b.setupTimeout, h.done, func() (int, bool) {
		n, err := h.migrations(ctx)
		if err != nil {
			return 0, false
		}
		return n, n == b.n
	})
}

// startGit makes the bare repository with every plan in one commit, a
// clone of it for the harness's changes, and serves it with git daemon.
func (h *hal9) startGit(ctx context.Context) error {
	b := h.b
	root := filepath.Join(b.dir, "git")
	h.remote = filepath.Join(root, "plans.git")
	h.work = filepath.Join(b.dir, "work")
	if err := run(ctx, "", "git", "init", "-q", "--bare", "-b", "main", h.remote); err != nil {
		return err
	}
	if err := run(ctx, "", "git", "init", "-q", "-b", "main", h.work); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(h.work, "plans"), 0o755); err != nil {
		return err
	}
	for i := range b.n {
		if err := os.WriteFile(h.planPath(i), []byte(h.plan(i)), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"add", "-A"}, {"commit", "-q", "-m", fmt.Sprintf("%d plans", b.n)},
		{"remote", "add", "origin", h.remote}, {"push", "-q", "origin", "HEAD:main"},
	} {
		if err := run(ctx, h.work, "git", args...); err != nil {
			return err
		}
	}
	port := b.freePort()
	h.git = exec.Command("git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
		"--base-path="+root, "--listen=127.0.0.1", fmt.Sprintf("--port=%d", port), root)
	logf, err := os.Create(filepath.Join(b.dir, "git-daemon.log"))
	if err != nil {
		return err
	}
	h.git.Stdout, h.git.Stderr = logf, logf
	if err := h.git.Start(); err != nil {
		return fmt.Errorf("start git daemon: %w", err)
	}
	h.gitDone = make(chan struct{})
	go func() { h.git.Wait(); logf.Close(); close(h.gitDone) }()
	repo := fmt.Sprintf("git://127.0.0.1:%d/plans.git", port)
	for range 100 {
		if run(ctx, "", "git", "ls-remote", repo) == nil {
			h.url = repo
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("git daemon did not serve %s", repo)
}

func (h *hal9) planPath(i int) string {
	return filepath.Join(h.work, "plans", fmt.Sprintf("p-%04d.yaml", i))
}

func (h *hal9) startDaemon() error {
	b := h.b
	repo := h.url
	port := b.freePort()
	h.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	// poll and interval are the defaults (1m, 30s), spelled out: pushes
	// reach the daemon through the sync call, as a webhook's would. The
	// ring of recent traces holds the reaction phase's (spans), which
	// nothing exports.
	cfg := fmt.Sprintf(`repo: %s
dataDir: %s
listen: 127.0.0.1:%d
poll: %s
interval: %s
kubernetes:
  kubeconfig: %s
  namespaces: [%s]
log: {level: info}
otlp: {recentTraces: 512}
`, repo, filepath.Join(b.dir, "data"), port, b.hal9Poll, b.hal9Interval, b.userKubeconfig, b.ns)
	cfgFile := filepath.Join(b.dir, "hal9-migrate.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.dir, "hal9-migrate.log"))
	if err != nil {
		return err
	}
	h.cmd = exec.Command(b.hal9Bin, "daemon", "--config", cfgFile)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.Env = append(os.Environ(), "HAL9_MIGRATE_API_TOKEN="+hal9Token)
	if err := h.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.hal9Bin, err)
	}
	h.done = make(chan struct{})
	go func() { h.cmd.Wait(); logf.Close(); close(h.done) }()
	return nil
}

// migrations is how many plans the daemon follows.
func (h *hal9) migrations(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/api/v1/migrations?history=0", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var body struct {
		Migrations []json.RawMessage `json:"migrations"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return 0, err
	}
	return len(body.Migrations), nil
}

func (h *hal9) watch(ctx context.Context) {
	b := h.b
	kf := informers.NewSharedInformerFactoryWithOptions(b.kube, 0, informers.WithNamespace(b.ns))
	inf := kf.Apps().V1().Deployments()
	h.informer, h.deploys = inf.Informer(), inf.Lister()
	h.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			o, n := old.(*appsv1.Deployment), obj.(*appsv1.Deployment)
			i := index(n.Name)
			if workloadWrite(&o.ObjectMeta, &n.ObjectMeta) {
				b.fleet.wrote(i, time.Now())
			}
			if i >= 0 && i < len(h.forward) && h.at(i, h.forward[i]) {
				b.fleet.completed(i, time.Now())
			}
		},
	})
	kf.Start(ctx.Done())
	kf.WaitForCacheSync(ctx.Done())
}

// at says whether migration i's Deployments stand at full (forward) or
// at start: the side in charge runs all the replicas, ready, of its
// latest spec, and the other none.
func (h *hal9) at(i int, forward bool) bool {
	up, down := fmt.Sprintf("s-%04d", i), fmt.Sprintf("c-%04d", i)
	if forward {
		up, down = down, up
	}
	u, err1 := h.deploys.Deployments(h.b.ns).Get(up)
	d, err2 := h.deploys.Deployments(h.b.ns).Get(down)
	if err1 != nil || err2 != nil {
		return false
	}
	r := int32(h.b.replicas)
	return u.Status.ObservedGeneration == u.Generation && *u.Spec.Replicas == r && u.Status.ReadyReplicas == r && u.Status.Replicas == r &&
		d.Status.ObservedGeneration == d.Generation && *d.Spec.Replicas == 0 && d.Status.Replicas == 0
}

// change commits the plans of idx with their target at full, pushes the
// commit, and tells the daemon.
func (h *hal9) change(ctx context.Context, idx []int, forward bool) error {
	return h.commit(ctx, idx, forward)
}

// reset moves the plans of idx back to start, and waits until their
// Deployments are there.
func (h *hal9) reset(ctx context.Context, idx []int) error {
	if err := h.commit(ctx, idx, false); err != nil {
		return err
	}
	return h.b.waitFor(ctx, "the reaction plans back at start", h.b.phaseTimeout, h.done, func() (int, bool) {
		n := 0
		for _, i := range idx {
			if h.at(i, false) {
				n++
			}
		}
		return n, n == len(idx)
	})
}

var targetLine = regexp.MustCompile(`(?m)^  target: .*$`)

func (h *hal9) commit(ctx context.Context, idx []int, forward bool) error {
	target := startTarget
	if forward {
		target = fullTarget
	}
	for _, i := range idx {
		b, err := os.ReadFile(h.planPath(i))
		if err != nil {
			return err
		}
		if err := os.WriteFile(h.planPath(i), targetLine.ReplaceAll(b, []byte("  "+target)), 0o644); err != nil {
			return err
		}
		h.forward[i] = forward
	}
	msg := fmt.Sprintf("move %d plans to %s", len(idx), strings.TrimPrefix(target, "target: "))
	if err := run(ctx, h.work, "git", "commit", "-q", "-a", "-m", msg); err != nil {
		return err
	}
	// The daemon commits status files to the same branch: a push it
	// beat is made again on its head, as a person would.
	var err error
	for range 20 {
		if err = run(ctx, h.work, "git", "push", "-q", "origin", "HEAD:main"); err == nil {
			break
		}
		if err := run(ctx, h.work, "git", "pull", "-q", "--rebase", "origin", "main"); err != nil {
			return err
		}
	}
	if err != nil {
		return fmt.Errorf("push %q: %w", msg, err)
	}
	h.b.fleet.changedAt(idx, time.Now())
	return h.sync(ctx)
}

// sync is the push webhook's part: POST /api/v1/sync.
func (h *hal9) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/api/v1/sync", nil)
	req.Header.Set("Authorization", "Bearer "+hal9Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST /api/v1/sync: %w", err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("POST /api/v1/sync: %s", res.Status)
	}
	return nil
}

// spans reads the daemon's recent traces (GET /api/v1/traces, its
// in-memory ring) and returns the p50 duration of each kind of span that
// started after since.
func (h *hal9) spans(ctx context.Context, since time.Time) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/api/v1/traces?limit=4096", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/traces: %s", res.Status)
	}
	var list struct {
		Traces []tracing.Trace `json:"traces"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 256<<20)).Decode(&list); err != nil {
		return nil, fmt.Errorf("GET /api/v1/traces: %w", err)
	}
	by := map[string][]float64{}
	for _, t := range list.Traces {
		for _, s := range t.Spans {
			if s.Start.After(since) && !s.End.IsZero() {
				by[s.Name] = append(by[s.Name], s.Duration().Seconds())
			}
		}
	}
	for _, ds := range by {
		slices.Sort(ds)
	}
	out := map[string]float64{}
	for name, ds := range by {
		out[name] = quantile(ds, 0.5)
	}
	return out, nil
}

func (h *hal9) stop() {
	if h.cmd != nil && h.cmd.Process != nil {
		stopProcess(h.cmd, h.done)
	}
	if h.git != nil && h.git.Process != nil {
		stopProcess(h.git, h.gitDone)
	}
}

// run runs a command in dir, within a minute, its output in the error.
func run(ctx context.Context, dir, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=fleetbench", "GIT_AUTHOR_EMAIL=fleetbench@127.0.0.1",
		"GIT_COMMITTER_NAME=fleetbench", "GIT_COMMITTER_EMAIL=fleetbench@127.0.0.1", "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
