package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/metrics"
	"github.com/hal9ai/hal9-migrate/notify"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/tracing"
)

func newDaemonCmd() *cobra.Command {
	cfg := daemon.DefaultConfig()
	var configFile string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the reconciler: follow the plan repository and drive the migrations",
		Long: `Daemon follows a branch of a Git repository of plans. It reads the plans
when the branch moves (polling, or at once on a push webhook), reconciles
every plan one step at a time through its driver, rolls back on a guardrail
breach, and commits each plan's status, and its own rollbacks, back to the
branch.

Settings come from flags, from environment variables named after them
(--poll is HAL9_MIGRATE_POLL) and from a YAML file (--config) for what does
not fit a flag; a flag beats its variable, which beats the file. Secrets are
read from files named in the config, or from HAL9_MIGRATE_WEBHOOK_SECRET and
HAL9_MIGRATE_API_TOKEN.

It serves /healthz, /readyz, /metrics, /api/v1/migrations, a status page at /
and, with a webhook secret, the push webhook at /webhook.`,
		Example: `  # Follow a repository with the embedded defaults (SQLite in ./hal9-migrate-data)
  hal9-migrate daemon --repo https://git.example.com/platform/migrations.git

  # Everything else from a file
  hal9-migrate daemon --config /etc/hal9-migrate/config.yaml`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return resolveDaemonConfig(cmd.Flags(), &cfg, configFile)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDaemon(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "a YAML config `file` for what does not fit a flag")
	f.StringVar(&cfg.Repo, "repo", cfg.Repo, "the plan repository: an ssh, https, git or file `URL`, or a local path")
	f.StringVar(&cfg.Branch, "branch", cfg.Branch, "the tracked `branch`")
	f.StringVar(&cfg.Path, "path", cfg.Path, "the plans `folder` in the repository")
	f.StringVar(&cfg.State, "state", cfg.State, "the store: sqlite://FILE or postgres://… (default: SQLite in --data-dir)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "the `folder` of the embedded SQLite store")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "the HTTP `address` (empty: no HTTP side)")
	f.DurationVar(&cfg.Poll, "poll", cfg.Poll, "how often the branch is checked without a webhook")
	f.DurationVar(&cfg.Interval, "interval", cfg.Interval, "how often every plan is reconciled")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "how many plans are reconciled at once")
	f.DurationVar(&cfg.StatusInterval, "status-interval", cfg.StatusInterval, "how often at most a plan's progress is committed to its status file")
	f.StringVar(&cfg.StatusAuthor.Name, "status-author-name", cfg.StatusAuthor.Name, "the author `name` of the daemon's commits")
	f.StringVar(&cfg.StatusAuthor.Email, "status-author-email", cfg.StatusAuthor.Email, "the author `email` of the daemon's commits")
	f.StringVar(&cfg.StatusDir, "status-dir", cfg.StatusDir, "the `folder` of the status files in the repository")
	f.StringVar(&cfg.StatusBranch, "status-branch", cfg.StatusBranch, "commit the status files to this `branch` (created from --branch) rather than to --branch")
	f.BoolVar(&cfg.SkipCI, "skip-ci", cfg.SkipCI, "mark the daemon's commits [skip ci]")
	f.StringVar(&cfg.Prometheus.URL, "prometheus", cfg.Prometheus.URL, "the Prometheus `URL` guardrail queries go to")
	f.Var((*commaList)(&cfg.Kubernetes.Namespaces), "kubernetes-namespaces", "the only `namespaces` (comma-separated) the Kubernetes driver may act in (default: any)")
	f.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "debug, info, warn or error")
	f.StringVar(&cfg.Log.Format, "log-format", cfg.Log.Format, "text or json")
	return cmd
}

// resolveDaemonConfig layers the settings: the config file over the
// defaults, then each flag's environment variable, then the flags given.
// The flags are bound to cfg, so it rereads cfg from the file and sets the
// flags again.
func resolveDaemonConfig(fs *pflag.FlagSet, cfg *daemon.Config, configFile string) error {
	given := map[string]string{}
	fs.Visit(func(f *pflag.Flag) { given[f.Name] = f.Value.String() })
	if configFile == "" {
		configFile = os.Getenv(configEnv)
	}
	if configFile != "" {
		fromFile, err := daemon.LoadConfig(configFile, daemon.DefaultConfig())
		if err != nil {
			return err
		}
		*cfg = fromFile
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Name == "config" || f.Name == "help" {
			return
		}
		if v, ok := given[f.Name]; ok {
			err = f.Value.Set(v)
			return
		}
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if serr := f.Value.Set(v); serr != nil {
				err = &usageError{err: fmt.Errorf("%s: %w", env, serr), command: "hal9-migrate daemon"}
			}
		}
	})
	if err != nil {
		return err
	}
	if err := cfg.Check(); err != nil {
		return &usageError{err: err, command: "hal9-migrate daemon"}
	}
	return nil
}

// runDaemon builds the daemon from cfg and runs it, with its HTTP side,
// until ctx ends.
func runDaemon(ctx context.Context, cfg daemon.Config) error {
	log := newLogger(cfg.Log)

	webhookSecret, err := daemon.Secret(envPrefix+"WEBHOOK_SECRET", cfg.Webhook.SecretFile)
	if err != nil {
		return fmt.Errorf("webhook secret: %w", err)
	}
	apiToken, err := daemon.Secret(envPrefix+"API_TOKEN", cfg.API.TokenFile)
	if err != nil {
		return fmt.Errorf("API token: %w", err)
	}

	// The data folder holds the embedded store, the fetched packs of the
	// plan repository (so that files beside the plans do not cost memory)
	// and the feature flags files.
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	st, err := store.Open(ctx, cfg.StateDSN())
	if err != nil {
		return err
	}
	defer st.Close()

	opts := gitops.Options{URL: cfg.Repo, Branch: cfg.Branch, Path: cfg.Path, CAFile: cfg.Git.CAFile, TempDir: cfg.DataDir,
		Timeouts: gitops.Timeouts{List: cfg.Git.Timeouts.List, Fetch: cfg.Git.Timeouts.Fetch, Push: cfg.Git.Timeouts.Push},
		Auth: gitops.Auth{SSHKeyFile: cfg.Git.SSHKeyFile, KnownHostsFile: cfg.Git.KnownHostsFile,
			TokenFile: cfg.Git.TokenFile, TokenUser: cfg.Git.TokenUser}}
	if cfg.Git.SSHKeyPassphraseFile != "" {
		if opts.Auth.SSHKeyPassphrase, err = daemon.Secret("", cfg.Git.SSHKeyPassphraseFile); err != nil {
			return fmt.Errorf("ssh key passphrase: %w", err)
		}
	}
	if cfg.Git.TrustedKeysFile != "" {
		keys, err := os.ReadFile(cfg.Git.TrustedKeysFile)
		if err != nil {
			return fmt.Errorf("trusted keys: %w", err)
		}
		opts.TrustedKeys = string(keys)
	}
	if cfg.Git.SigningKeyFile != "" {
		key, err := daemon.Secret("", cfg.Git.SigningKeyFile)
		if err != nil {
			return fmt.Errorf("signing key: %w", err)
		}
		opts.SigningKey = key
	}
	// A plan file over the size limit is refused by its size, never read,
	// by the repository as by the validator.
	opts.MaxFileBytes = int64(cfg.Plans.MaxFileSize)
	if opts.MaxFileBytes == 0 {
		opts.MaxFileBytes = int64(plan.DefaultLimits().MaxFileSize)
	}
	repo, err := gitops.Open(ctx, opts)
	if err != nil {
		return err
	}
	var statusRepo daemon.Git
	if cfg.StatusBranch != "" && cfg.StatusBranch != cfg.Branch {
		so := opts
		so.Branch, so.CreateFrom, so.Path, so.TrustedKeys, so.SigningKey = cfg.StatusBranch, cfg.Branch, cfg.StatusDir, "", ""
		r, err := gitops.Open(ctx, so)
		if err != nil {
			return fmt.Errorf("status branch: %w", err)
		}
		statusRepo = r
	}
	validator, err := plan.NewValidator(plan.WithLimits(cfg.Plans))
	if err != nil {
		return err
	}
	defer validator.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	parts, err := openParts(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer parts.close()

	// Traces: kept in a ring for the API, and exported with OTLP when an
	// endpoint is set, in the background.
	tp, err := tracing.New(ctx, cfg.OTLP, tracing.Options{Version: buildVersion(),
		Traces: cfg.OTLP.RecentTraces, SpansPerTrace: cfg.OTLP.SpansPerTrace})
	if err != nil {
		return err
	}
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(flush)
	}()
	if tp.Exporting {
		log.Info("exporting traces", "endpoint", cfg.OTLP.Endpoint, "protocol", cmp.Or(cfg.OTLP.Protocol, "http"))
	}

	clk := clock.RealClock{}
	d := &daemon.Daemon{
		Git: repo, StatusGit: statusRepo, Validator: validator, Store: st, Plans: st, Clock: clk,
		Poll: cfg.Poll, Interval: cfg.Interval, StatusInterval: cfg.StatusInterval,
		SyncTimeout: cfg.Timeouts.Sync, CommitTimeout: cfg.Timeouts.Commit,
		Author:    gitops.Signature{Name: cfg.StatusAuthor.Name, Email: cfg.StatusAuthor.Email},
		StatusDir: cfg.StatusDir, SkipCI: cfg.SkipCI, Log: log, Metrics: m, Prober: parts.prober,
		RequireSigned: opts.TrustedKeys != "",
		Tracer:        tp, Traces: tp.Ring,
		Runner: &reconcile.Runner{Store: st, Open: parts.open, Guards: parts.guards, Checks: parts.checks,
			Clock: clk, Workers: cfg.Workers, StepTimeout: cfg.Timeouts.Step, Log: log},
	}
	parts.setWake(d.WakePlan)
	if parts.shards != nil {
		// Each line says which replica wrote it, so that the replicas'
		// logs read together say who stepped what.
		log = log.With("replica", parts.shards.Identity())
		d.Log, d.Runner.Log = log, log
		d.Shards = parts.shards
		held := metrics.NewShardsHeld(reg)
		parts.shardAcquired = d.ShardAcquired
		parts.shardsChanged = func(n int) {
			held.Set(float64(n))
			d.ShardsChanged()
		}
	}
	if len(cfg.Notifications.Targets) > 0 {
		// Secrets are read here, once; a send never waits in either loop.
		n, err := notify.New(cfg.Notifications, notify.Options{Metrics: notify.NewMetrics(reg), Log: log})
		if err != nil {
			return fmt.Errorf("notifications: %w", err)
		}
		defer n.Close()
		d.Notify = n
	}
	// A pull-request promotion is a branch of its own, from the tracked
	// one, signed as the daemon's commits are.
	d.Propose = func(ctx context.Context, branch string) (daemon.Git, error) {
		po := opts
		po.Branch, po.CreateFrom, po.TrustedKeys = branch, cfg.Branch, ""
		return gitops.Open(ctx, po)
	}
	if cfg.Forge.Enabled() {
		if err := wireForge(d, cfg); err != nil {
			return err
		}
	}

	errs := make(chan error, 2)
	var srv *http.Server
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		srv = daemon.NewServer(d.Handler(daemon.HTTPOptions{
			Metrics:       promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
			WebhookSecret: []byte(webhookSecret), Branch: cfg.Branch, APIToken: apiToken,
			Deadlines: daemon.Deadlines{Verify: cfg.API.VerifyTimeout},
		}), daemon.ServerOptions{})
		log.Info("serving HTTP", "address", ln.Addr().String(), "webhook", webhookSecret != "", "api token", apiToken != "")
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("http: %w", err)
			}
		}()
	}

	log.Info("following plans", "repo", gitops.Redact(cfg.Repo), "branch", cfg.Branch, "path", cfg.Path,
		"store", store.Redact(cfg.StateDSN()), "poll", cfg.Poll, "interval", cfg.Interval)
	go func() {
		errs <- parts.run(ctx, func(ctx context.Context) error {
			// A new term of leadership starts from the store: another
			// replica may have led meanwhile.
			d.Runner.Forget()
			return d.Run(ctx)
		})
	}()

	select {
	case err = <-errs:
	case <-ctx.Done():
		// Stopping: every move was recorded before it was applied, and a
		// rollback's commit is owed by the record, so nothing is lost by
		// not waiting long. A loop stuck past the bound is left behind.
		select {
		case err = <-errs:
		case <-time.After(cfg.Timeouts.Shutdown):
			log.Warn("the loops did not stop in time; exiting", "waited", cfg.Timeouts.Shutdown)
			err = context.Canceled
		}
	}
	if srv != nil {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		log.Info("stopped")
		return nil
	}
	return err
}

func newLogger(c daemon.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	// Records made within a span carry its trace_id and span_id.
	if c.Format == "json" {
		return slog.New(tracing.LogHandler(slog.NewJSONHandler(os.Stderr, opts)))
	}
	return slog.New(tracing.LogHandler(slog.NewTextHandler(os.Stderr, opts)))
}
