package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/docker"
	"github.com/hal9ai/hal9-migrate/drivers/kubernetes"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/leader"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// daemonParts are the parts of the daemon its configuration chooses: the
// drivers, the guardrail providers, and how it runs (alone, or as one of
// several replicas electing a leader).
type daemonParts struct {
	open   drivers.Opener
	guards reconcile.Guardrails
	checks reconcile.Checker
	prober daemon.Prober
	// measured is told a plan's name when one of its guardrails has been
	// measured: set it to the daemon's WakePlan once the daemon exists.
	measured func(plan string)
	// run runs the daemon's loop: at once, or while this replica leads.
	run     func(ctx context.Context, loop func(context.Context) error) error
	closers []func() error
}

func (p *daemonParts) close() {
	for _, c := range p.closers {
		_ = c()
	}
}

// openParts builds the parts. A driver is opened lazily, when a plan needs
// it: a daemon with only Docker plans needs no Kubernetes, and the other
// way round; a plan naming a driver that cannot be reached is an error in
// that plan's status, never a fallback.
func openParts(ctx context.Context, cfg daemon.Config, log *slog.Logger) (*daemonParts, error) {
	parts := &daemonParts{run: func(ctx context.Context, loop func(context.Context) error) error { return loop(ctx) }}

	flags := cfg.Docker.FlagsPath
	if flags == "" {
		flags = filepath.Join(cfg.DataDir, "flags", "{plan}.flagd.json")
	}
	engine, err := docker.New(docker.Options{
		Host: cfg.Docker.Host, ComposeProject: cfg.Docker.ComposeProject, Replicas: cfg.Docker.Replicas,
		FlagsPath: flags, NginxDir: cfg.Docker.NginxDir, NginxRouterDir: cfg.Docker.NginxRouterDir,
		NginxTest: cfg.Docker.NginxTest, NginxReload: cfg.Docker.NginxReload, HAProxyRuntimeAPI: cfg.Docker.HAProxyRuntimeAPI,
		Log: log.With("driver", "docker"),
	})
	if err != nil {
		return nil, err
	}
	parts.closers = append(parts.closers, engine.Close)
	kube := lazyKube(cfg.Kubernetes.Kubeconfig)
	openers := map[string]drivers.Opener{
		"docker":     engine.Open,
		"kubernetes": kubernetesOpener(kube, cfg.Kubernetes.Namespaces, log),
	}
	parts.open = drivers.Select(openers)

	if le := cfg.Kubernetes.LeaderElection; le.Enabled {
		if err := leaderRun(parts, kube, le, log); err != nil {
			parts.close()
			return nil, err
		}
	}

	var prom *guardrails.Prometheus
	if cfg.Prometheus.URL != "" {
		prom, err = guardrails.NewPrometheus(cfg.Prometheus)
		if err != nil {
			parts.close()
			return nil, fmt.Errorf("prometheus: %w", err)
		}
	}
	providers := guardrailProviders(prom, &http.Client{Timeout: 30 * time.Second})
	// Resource use is read through the plans' own drivers: the same
	// engine or cluster the daemon moves.
	providers[guardrails.KindResources] = guardrails.NewResources(parts.open)
	// Asynchronous: the safety loop never waits on Prometheus or a health
	// endpoint; a measurement that comes in wakes the plan at once.
	parts.guards = guardrails.NewEvaluator(providers, guardrails.WithInterval(cfg.Interval), guardrails.WithTimeout(cfg.Timeouts.Guardrail),
		guardrails.WithNotify(func(plan string) {
			if f := parts.measured; f != nil {
				f(plan)
			}
		}))
	parts.checks = guardrails.NewChecker(providers, guardrails.WithTimeout(cfg.Timeouts.Guardrail))
	parts.prober = providers
	return parts, nil
}

// guardrailProviders are the providers guardrails and checks are measured
// with: Prometheus when one is configured (prom not nil), and HTTP checks
// sent through client.
func guardrailProviders(prom *guardrails.Prometheus, client *http.Client) guardrails.Providers {
	providers := guardrails.Providers{guardrails.KindHTTP: guardrails.NewHTTP(client)}
	if prom != nil {
		providers[guardrails.KindPrometheus] = prom
	}
	return providers
}

// lazyKube returns the Kubernetes client configuration, worked out once on
// first use: the kubeconfig file the configuration names, else the pod's
// own (in a cluster), else KUBECONFIG or ~/.kube/config.
func lazyKube(kubeconfig string) func() (*rest.Config, error) {
	return sync.OnceValues(func() (*rest.Config, error) {
		if kubeconfig != "" {
			c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
			}
			return c, nil
		}
		if c, err := rest.InClusterConfig(); err == nil {
			return c, nil
		}
		c, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("no Kubernetes configuration (not in a cluster, no kubeconfig): %w", err)
		}
		return c, nil
	})
}

// kubernetesOpener opens the Kubernetes driver of a plan, reaching the API
// server only when a plan needs it; with namespaces, only in those.
func kubernetesOpener(kube func() (*rest.Config, error), namespaces []string, log *slog.Logger) drivers.Opener {
	opener := sync.OnceValues(func() (drivers.Opener, error) {
		c, err := kube()
		if err != nil {
			return nil, err
		}
		return kubernetes.Opener(c, kubernetes.WithInstance(identity()), kubernetes.WithLogger(log.With("driver", "kubernetes")),
			kubernetes.WithNamespaces(namespaces...)), nil
	})
	return func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		open, err := opener()
		if err != nil {
			return nil, err
		}
		return open(ctx, p)
	}
}

// leaderRun makes the daemon's loop run only while this replica holds the
// Lease.
func leaderRun(parts *daemonParts, kube func() (*rest.Config, error), le daemon.LeaderElectionConfig, log *slog.Logger) error {
	c, err := kube()
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	ns := le.Namespace
	if ns == "" {
		ns = podNamespace()
	}
	if ns == "" {
		return errors.New("leader election: no namespace for the Lease (kubernetes.leaderElection.namespace, or POD_NAMESPACE)")
	}
	lease := leader.Lease{Namespace: ns, Name: le.Name}
	d := leader.Durations{Lease: le.LeaseDuration, Renew: le.RenewDeadline, Retry: le.RetryPeriod}
	id := identity()
	parts.run = func(ctx context.Context, loop func(context.Context) error) error {
		log.Info("campaigning for the lease", "lease", lease.String(), "identity", id)
		return leader.Run(ctx, c, id, lease, d, func(ctx context.Context) {
			if err := loop(ctx); err != nil && ctx.Err() == nil {
				log.Error("the daemon's loop stopped while leading", "err", err)
			}
		}, leader.WithLogger(log))
	}
	return nil
}

// identity names this replica: the pod's name (POD_NAME, else the host
// name, which is the pod's name in a cluster).
func identity() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "hal9-migrate"
}

// podNamespace is the namespace the daemon runs in: POD_NAMESPACE, else
// the service account's.
func podNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
