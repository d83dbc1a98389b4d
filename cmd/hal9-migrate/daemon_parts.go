package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// wakePlan is told a plan's name when one of its guardrails has been
	// measured, or a watched change to its Kubernetes objects came in:
	// setWake sets it to the daemon's WakePlan once the daemon exists
	// (after the parts, which the daemon is made of). Until then a wake
	// is dropped: the daemon's first cycle steps every plan anyway.
	wakePlan atomic.Pointer[func(plan string)]
	// run runs the daemon's loop: at once, or while this replica leads.
	run     func(ctx context.Context, loop func(context.Context) error) error
	closers []func() error
	// shards is this replica's share of the plans (kubernetes.sharding);
	// nil: it steps them all. shardAcquired and shardsChanged are told of
	// its changes: set them once the daemon exists.
	shards        *leader.Shards
	shardAcquired func(shard int)
	shardsChanged func(held int)
}

// setWake makes wake what a measurement or a watched change calls.
func (p *daemonParts) setWake(wake func(plan string)) { p.wakePlan.Store(&wake) }

// wake wakes plan, once setWake has been called. It never blocks.
func (p *daemonParts) wake(plan string) {
	if f := p.wakePlan.Load(); f != nil {
		(*f)(plan)
	}
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
	// The default cluster ("") and each named one, reached on first use.
	kube := lazyKube(cfg.Kubernetes.Kubeconfig)
	clusters := map[string]func() (*rest.Config, error){"": kube}
	for name, c := range cfg.Kubernetes.Clusters {
		clusters[name] = lazyCluster(name, c, cfg.Kubernetes.Kubeconfig)
	}
	openers := map[string]drivers.Opener{
		"docker":     engine.Open,
		"kubernetes": kubernetesOpener(clusters, cfg.Kubernetes.Namespaces, parts.wake, log),
	}
	if cfg.Kubernetes.Sharding.Enabled {
		openers["docker"] = refuseSharded
	}
	parts.open = drivers.Select(openers)

	if le := cfg.Kubernetes.LeaderElection; le.Enabled {
		if err := leaderRun(parts, kube, le, log); err != nil {
			parts.close()
			return nil, err
		}
	}
	if cfg.Kubernetes.Sharding.Enabled {
		if err := shardRun(parts, kube, cfg, log); err != nil {
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
		guardrails.WithNotify(parts.wake))
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

// lazyCluster returns the client configuration of the cluster named name,
// worked out once on first use: c's context (else the current one) in c's
// kubeconfig, else in defaultFile (kubernetes.kubeconfig), else in
// KUBECONFIG or ~/.kube/config. A context the file does not have is an
// error naming the contexts it has.
func lazyCluster(name string, c daemon.ClusterConfig, defaultFile string) func() (*rest.Config, error) {
	return sync.OnceValues(func() (*rest.Config, error) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		where := "the default kubeconfig (KUBECONFIG or ~/.kube/config)"
		if file := cmp.Or(c.Kubeconfig, defaultFile); file != "" {
			rules.ExplicitPath = file
			where = "kubeconfig " + file
		}
		raw, err := rules.Load()
		if err != nil {
			return nil, fmt.Errorf("kubernetes.clusters.%s: %s: %w", name, where, err)
		}
		ctxName := cmp.Or(c.Context, raw.CurrentContext)
		if ctxName == "" {
			return nil, fmt.Errorf("kubernetes.clusters.%s: %s has no current context: set kubernetes.clusters.%s.context (its contexts: %s)",
				name, where, name, contextNames(raw.Contexts))
		}
		if _, ok := raw.Contexts[ctxName]; !ok {
			return nil, fmt.Errorf("kubernetes.clusters.%s: context %q is not in %s (its contexts: %s)", name, ctxName, where, contextNames(raw.Contexts))
		}
		rc, err := clientcmd.NewNonInteractiveClientConfig(*raw, ctxName, &clientcmd.ConfigOverrides{}, rules).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes.clusters.%s: context %q of %s: %w", name, ctxName, where, err)
		}
		return rc, nil
	})
}

// contextNames lists a kubeconfig's contexts for an error message.
func contextNames[V any](contexts map[string]V) string {
	if len(contexts) == 0 {
		return "none"
	}
	return strings.Join(slices.Sorted(maps.Keys(contexts)), ", ")
}

// kubernetesOpener opens the Kubernetes driver of a plan on the cluster
// its kubernetes block names ("" the default one), reaching each API
// server only when a plan first needs it; with namespaces, only in those,
// on every cluster. A plan naming a cluster not in clusters is refused,
// the error naming those that are. The drivers of a cluster read from
// one informer cache, and a watched change to a plan's objects calls
// wake with its name.
func kubernetesOpener(clusters map[string]func() (*rest.Config, error), namespaces []string, wake func(plan string), log *slog.Logger) drivers.Opener {
	openers := make(map[string]func() (drivers.Opener, error), len(clusters))
	var names []string
	for name, kube := range clusters {
		if name != "" {
			names = append(names, name)
		}
		l := log.With("driver", "kubernetes")
		if name != "" {
			l = l.With("cluster", name)
		}
		openers[name] = sync.OnceValues(func() (drivers.Opener, error) {
			c, err := kube()
			if err != nil {
				return nil, err
			}
			return kubernetes.Opener(c, kubernetes.WithInstance(identity()), kubernetes.WithLogger(l),
				kubernetes.WithNamespaces(namespaces...), kubernetes.WithWake(wake)), nil
		})
	}
	slices.Sort(names)
	configured := "it lists none"
	if len(names) > 0 {
		configured = "it lists " + strings.Join(names, ", ")
	}
	return func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		cluster := ""
		if k := p.Spec.Driver.Kubernetes; k != nil {
			cluster = k.Cluster
		}
		opener, ok := openers[cluster]
		if !ok {
			return nil, fmt.Errorf("plan %s names the cluster %q, which is not in the daemon's kubernetes.clusters (%s)", p.Metadata.Name, cluster, configured)
		}
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

// shardRun makes the daemon's loop run beside this replica's share of
// the shards (leader.Shards): the loop steps the plans of the shards it
// holds, and when the daemon stops, the shards are given up once their
// steps have ended.
func shardRun(parts *daemonParts, kube func() (*rest.Config, error), cfg daemon.Config, log *slog.Logger) error {
	c, err := kube()
	if err != nil {
		return fmt.Errorf("kubernetes.sharding needs the Kubernetes API server for its Leases: %w", err)
	}
	s := cfg.ShardingSettings(podNamespace())
	if s.Namespace == "" {
		return errors.New("kubernetes.sharding: no namespace for the Leases (kubernetes.sharding.namespace, or POD_NAMESPACE)")
	}
	shards, err := leader.NewShards(c, identity(), s, leader.WithShardsLogger(log),
		leader.OnAcquired(func(i int) {
			if f := parts.shardAcquired; f != nil {
				f(i)
			}
		}),
		leader.OnChanged(func(n int) {
			if f := parts.shardsChanged; f != nil {
				f(n)
			}
		}))
	if err != nil {
		return err
	}
	parts.shards = shards
	parts.run = func(ctx context.Context, loop func(context.Context) error) error {
		var wg sync.WaitGroup
		wg.Go(func() { _ = shards.Run(ctx) })
		err := loop(ctx)
		wg.Wait()
		return err
	}
	return nil
}

// refuseSharded is the Docker driver's opener under kubernetes.sharding:
// each replica would drive its own engine.
func refuseSharded(_ context.Context, p *plan.Plan) (drivers.Driver, error) {
	return nil, fmt.Errorf("plan %s uses the docker driver, which drives the engine of the replica that runs it: under kubernetes.sharding its replicas would each drive their own; run one replica, without sharding, for Docker plans", p.Metadata.Name)
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
