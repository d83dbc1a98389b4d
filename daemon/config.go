package daemon

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/forge"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/leader"
	"github.com/hal9ai/hal9-migrate/notify"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/tracing"
)

// Config is the daemon's configuration: flags (each also read from
// HAL9_MIGRATE_<FLAG>) set the common fields, and a YAML file (--config)
// holds the rest. Secrets are never in it: it names files that hold them,
// and the environment can carry the webhook secret and the API token.
type Config struct {
	// Repo is the plan repository's URL (ssh, https, git, file or a
	// local path); Branch the tracked branch; Path the plans folder.
	Repo   string `yaml:"repo"`
	Branch string `yaml:"branch"`
	Path   string `yaml:"path"`
	// State is the store's DSN, sqlite://FILE or postgres://…; empty: a
	// SQLite file in DataDir.
	State   string `yaml:"state"`
	DataDir string `yaml:"dataDir"`
	// Listen is the HTTP address; empty: no HTTP side.
	Listen string `yaml:"listen"`
	// Poll is how often the branch head is checked without a webhook;
	// Interval how often every plan is reconciled.
	Poll     time.Duration `yaml:"poll"`
	Interval time.Duration `yaml:"interval"`
	// Workers bounds the plans reconciled at once.
	Workers int `yaml:"workers"`
	// StatusInterval is how often at most a plan's progress is committed
	// to its status file; rollbacks, freezes and new conditions go at once.
	StatusInterval time.Duration `yaml:"statusInterval"`
	// Timeouts bound what the daemon waits for.
	Timeouts TimeoutsConfig `yaml:"timeouts"`
	// StatusAuthor signs the daemon's commits; StatusDir holds the status
	// files; SkipCI marks its commits "[skip ci]".
	StatusAuthor Author `yaml:"statusAuthor"`
	StatusDir    string `yaml:"statusDir"`
	// StatusBranch, when set, is the branch the status files are committed
	// to, created from Branch if missing: the tracked branch then receives
	// only plan changes and the daemon's rollbacks. Empty: Branch.
	StatusBranch string `yaml:"statusBranch"`
	SkipCI       bool   `yaml:"skipCI"`

	Git     GitConfig     `yaml:"git"`
	Webhook WebhookConfig `yaml:"webhook"`
	API     APIConfig     `yaml:"api"`
	// Prometheus is where guardrail queries go and how they
	// authenticate.
	Prometheus guardrails.PrometheusConfig `yaml:"prometheus"`
	Docker     DockerConfig                `yaml:"docker"`
	Kubernetes KubernetesConfig            `yaml:"kubernetes"`
	Log        LogConfig                   `yaml:"log"`
	// Forge, when set, is where pull-request promotions are opened and
	// each migration's progress is shown as a commit status.
	Forge forge.Config `yaml:"forge"`
	// Plans bounds the reading of plan files (size, YAML aliases, CUE's
	// time and memory), as plan vet's flags do in CI.
	Plans plan.Limits `yaml:"plans"`
	// Notifications are where transitions are sent (Slack, Teams, a
	// signed webhook, CloudEvents), which and how they read.
	Notifications notify.Config `yaml:"notifications"`
	// OTLP is where the daemon's traces are exported; no endpoint: they
	// are kept in its ring alone (GET /api/v1/traces).
	OTLP tracing.OTLPConfig `yaml:"otlp"`
}

// Author is a commit author.
type Author struct {
	Name  string `yaml:"name"`
	Email string `yaml:"email"`
}

// GitConfig holds the plan repository's credentials, all as files.
type GitConfig struct {
	SSHKeyFile           string `yaml:"sshKeyFile"`
	SSHKeyPassphraseFile string `yaml:"sshKeyPassphraseFile"`
	KnownHostsFile       string `yaml:"knownHostsFile"`
	TokenFile            string `yaml:"tokenFile"`
	TokenUser            string `yaml:"tokenUser"`
	CAFile               string `yaml:"caFile"`
	// TrustedKeysFile is an armored OpenPGP key ring: when set, every
	// change to a plan needs a trusted signature, except lowering its
	// target.
	TrustedKeysFile string `yaml:"trustedKeysFile"`
	// SigningKeyFile is an armored OpenPGP private key, without a
	// passphrase, that signs the daemon's commits. Under signed mode an
	// auto promotion needs it, and it must be among the trusted keys: the
	// daemon refuses to start otherwise.
	SigningKeyFile string `yaml:"signingKeyFile"`
	// Timeouts bound each call to the remote (zero: 10s, 60s, 30s).
	Timeouts GitTimeouts `yaml:"timeouts"`
}

// GitTimeouts bound each call to the plan repository's remote: listing its
// refs, fetching the branch, pushing a commit.
type GitTimeouts struct {
	List  time.Duration `yaml:"list"`
	Fetch time.Duration `yaml:"fetch"`
	Push  time.Duration `yaml:"push"`
}

// WebhookConfig is the push webhook's secret.
type WebhookConfig struct {
	SecretFile string `yaml:"secretFile"`
}

// APIConfig is the token the API's acting endpoints need (taking a
// checkpoint, verify, running a pre-check, sync), and how long a verify
// request may run (default 1h, DefaultDeadlines).
type APIConfig struct {
	TokenFile     string        `yaml:"tokenFile"`
	VerifyTimeout time.Duration `yaml:"verifyTimeout"`
}

// DockerConfig is how the Docker driver reaches the engine, the nginx and
// HAProxy routers and the flags file. Each field is the docker.Options field of the
// same name.
type DockerConfig struct {
	// Host is the engine's address; empty: DOCKER_HOST or the local
	// socket.
	Host string `yaml:"host"`
	// ComposeProject restricts plans' `service` workloads to one Compose
	// project; empty: a service found in two projects is an error.
	ComposeProject string `yaml:"composeProject"`
	// Replicas is the replica total split by replica ratio when the
	// containers carry no migrate.hal9.ai/replicas label; 0 keeps the
	// number running.
	Replicas int `yaml:"replicas"`
	// NginxDir is the folder the nginx router's files are rendered into
	// (UPSTREAM.http.conf and UPSTREAM.server.conf), as the daemon sees
	// it; NginxRouterDir is the same folder as an nginx container sees
	// it, when that differs and the container's mounts do not tell.
	NginxDir       string `yaml:"nginxDir"`
	NginxRouterDir string `yaml:"nginxRouterDir"`
	// NginxTest checks and NginxReload reloads nginx when it runs on the
	// host (defaults: nginx -t -q, nginx -s reload; an empty list skips the
	// check). An nginx container is checked with exec and reloaded with
	// SIGHUP through the engine.
	NginxTest   []string `yaml:"nginxTest"`
	NginxReload []string `yaml:"nginxReload"`
	// HAProxyRuntimeAPI is where the runtime API of HAProxy on the host
	// listens at admin level, for plans with traffic.haproxy: a unix
	// socket path, or a loopback HOST:PORT. It is the daemon's to say, not
	// a plan's: the API changes every backend of that HAProxy.
	HAProxyRuntimeAPI string `yaml:"haproxyRuntimeAPI"`
	// FlagsPath is where each plan's feature flags are written, in flagd's
	// format; "{plan}" is replaced by the plan's name. Empty:
	// DataDir/flags/{plan}.flagd.json.
	FlagsPath string `yaml:"flagsPath"`
}

// KubernetesConfig is how the Kubernetes driver reaches the API servers,
// and whether replicas elect a leader.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file; empty: in-cluster, or KUBECONFIG,
	// or ~/.kube/config. It is the default cluster: the one a plan that
	// names no cluster is driven on, and the one the Lease is held in.
	Kubeconfig string `yaml:"kubeconfig"`
	// Clusters are the other API servers, by the name a plan gives in
	// spec.driver.kubernetes.cluster. A plan naming one not listed here
	// waits, its status saying so.
	Clusters map[string]ClusterConfig `yaml:"clusters"`
	// Namespaces are the only namespaces the Kubernetes driver may act
	// in: a plan naming another one is refused. Empty: any namespace
	// (the RBAC decides).
	Namespaces     []string             `yaml:"namespaces"`
	LeaderElection LeaderElectionConfig `yaml:"leaderElection"`
	// Sharding shares the plans among the replicas; exclusive of
	// LeaderElection, where one replica does all.
	Sharding ShardingConfig `yaml:"sharding"`
}

// ShardingConfig shares the plans among replicas of the daemon: the plans
// fall into Shards shards by a hash of their name (of their lockstep
// group's, for a group's members), each shard a Lease that one replica
// at a time holds, and each replica takes its fair share of them. Every
// replica follows the Git branch; each steps, and writes back, the plans
// of its shards alone. It needs the Leases of the default cluster and a
// store the replicas share (PostgreSQL); Docker plans cannot be sharded.
//
// The guarantee that no plan is stepped by two replicas at once needs
// RenewDeadline + timeouts.step < LeaseDuration: a replica that cannot
// renew stops starting steps after RenewDeadline, its last step ends
// within timeouts.step, and only then may another take the shard.
type ShardingConfig struct {
	Enabled bool `yaml:"enabled"`
	// Shards is how many shards there are (default 16); every replica
	// must say the same. More shards than replicas spreads the plans
	// evenly.
	Shards int `yaml:"shards"`
	// Namespace holds the Leases (default: POD_NAMESPACE, else the
	// service account's); Name prefixes them (default hal9-migrate):
	// NAME-shard-N and NAME-member-REPLICA.
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	// LeaseDuration is how long a shard of a replica that died waits
	// before another takes it (default 150s); RenewDeadline how long a
	// replica goes on stepping without a confirmed renewal (default 20s);
	// RetryPeriod how often it renews and looks for shards (default 5s).
	LeaseDuration time.Duration `yaml:"leaseDuration"`
	RenewDeadline time.Duration `yaml:"renewDeadline"`
	RetryPeriod   time.Duration `yaml:"retryPeriod"`
}

// ClusterConfig is how the daemon reaches one named cluster: a kubeconfig
// file, a context in it, or both. The file and the context are read when a
// plan first names the cluster; a context the file does not have is that
// plan's error then.
type ClusterConfig struct {
	// Kubeconfig is a kubeconfig file; empty: kubernetes.kubeconfig,
	// else KUBECONFIG or ~/.kube/config.
	Kubeconfig string `yaml:"kubeconfig"`
	// Context is a context of that kubeconfig; empty: its current
	// context.
	Context string `yaml:"context"`
}

// ClusterNames returns the names of the configured clusters, sorted.
func (k KubernetesConfig) ClusterNames() []string {
	return slices.Sorted(maps.Keys(k.Clusters))
}

// LeaderElectionConfig makes replicas of the daemon elect one leader with
// a Lease; only the leader acts.
type LeaderElectionConfig struct {
	Enabled       bool          `yaml:"enabled"`
	Namespace     string        `yaml:"namespace"`
	Name          string        `yaml:"name"`
	LeaseDuration time.Duration `yaml:"leaseDuration"`
	RenewDeadline time.Duration `yaml:"renewDeadline"`
	RetryPeriod   time.Duration `yaml:"retryPeriod"`
}

// TimeoutsConfig bounds the daemon's waits. Every call that leaves the
// process has a deadline: these, the Prometheus query timeout
// (prometheus.timeout), each HTTP check's own timeout, and Git's per-call
// ones.
type TimeoutsConfig struct {
	// Sync bounds one sync of the plan repository: listing, fetching,
	// validating and gating the plans.
	Sync time.Duration `yaml:"sync"`
	// Commit bounds one commit with its fetches, pushes and retries.
	Commit time.Duration `yaml:"commit"`
	// Step bounds one plan's step of the safety loop: its driver calls and
	// store writes.
	Step time.Duration `yaml:"step"`
	// Guardrail bounds one measurement of a guardrail or a check.
	Guardrail time.Duration `yaml:"guardrail"`
	// Shutdown bounds how long the daemon takes to stop on SIGTERM.
	Shutdown time.Duration `yaml:"shutdown"`
}

// LogConfig is the log's level (debug, info, warn, error) and format
// (text, json).
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// DefaultConfig is the configuration with nothing set: the embedded
// defaults.
func DefaultConfig() Config {
	return Config{
		Branch:         "main",
		Path:           "plans",
		DataDir:        "hal9-migrate-data",
		Listen:         "127.0.0.1:8080",
		Poll:           time.Minute,
		Interval:       30 * time.Second,
		Workers:        4,
		StatusInterval: time.Minute,
		Timeouts: TimeoutsConfig{Sync: 2 * time.Minute, Commit: time.Minute, Step: 2 * time.Minute,
			Guardrail: 15 * time.Second, Shutdown: 10 * time.Second},
		StatusAuthor: Author{Name: "hal9-migrate", Email: "hal9-migrate@localhost"},
		StatusDir:    "status",
		Kubernetes: KubernetesConfig{LeaderElection: LeaderElectionConfig{
			Name: "hal9-migrate", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		}, Sharding: ShardingConfig{
			// Long enough for the default timeouts.step (2m): 20s + 2m < 150s.
			Shards: 16, Name: "hal9-migrate", LeaseDuration: 150 * time.Second, RenewDeadline: 20 * time.Second, RetryPeriod: 5 * time.Second,
		}},
		Log:   LogConfig{Level: "info", Format: "text"},
		Plans: plan.DefaultLimits(),
	}
}

// LoadConfig reads a YAML config file over defaults. Unknown keys are
// errors naming the line, so a misspelt setting is not silently ignored.
func LoadConfig(path string, defaults Config) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg := defaults
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return cfg, nil
}

// Check reports the first setting that cannot work.
func (c Config) Check() error {
	switch {
	case c.Repo == "":
		return errors.New("no plan repository: set --repo (or HAL9_MIGRATE_REPO, or repo: in the config file)")
	case c.Poll <= 0:
		return fmt.Errorf("poll: %s is not a positive duration", c.Poll)
	case c.Interval <= 0:
		return fmt.Errorf("interval: %s is not a positive duration", c.Interval)
	case c.Workers <= 0:
		return fmt.Errorf("workers: %d is not a positive number", c.Workers)
	case c.StatusInterval <= 0:
		return fmt.Errorf("statusInterval: %s is not a positive duration", c.StatusInterval)
	case c.State == "" && c.DataDir == "":
		return errors.New("no store: set --state or --data-dir")
	case c.API.VerifyTimeout < 0:
		return fmt.Errorf("api.verifyTimeout: %s is negative", c.API.VerifyTimeout)
	}
	for i, ns := range c.Kubernetes.Namespaces {
		switch {
		case !namespaceName.MatchString(ns):
			return fmt.Errorf("kubernetes.namespaces: %q is not a namespace name (a DNS-1123 label)", ns)
		case slices.Contains(c.Kubernetes.Namespaces[:i], ns):
			return fmt.Errorf("kubernetes.namespaces: %q is listed twice", ns)
		}
	}
	for _, name := range c.Kubernetes.ClusterNames() {
		cl := c.Kubernetes.Clusters[name]
		switch {
		case !namespaceName.MatchString(name):
			return fmt.Errorf("kubernetes.clusters: %q is not a cluster name (a DNS-1123 label, as plans name it in spec.driver.kubernetes.cluster)", name)
		case cl.Kubeconfig == "" && cl.Context == "":
			return fmt.Errorf("kubernetes.clusters.%s: set kubeconfig, context or both (with neither it would be the default cluster, which a plan reaches by naming none)", name)
		}
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"timeouts.sync", c.Timeouts.Sync}, {"timeouts.commit", c.Timeouts.Commit}, {"timeouts.step", c.Timeouts.Step},
		{"timeouts.guardrail", c.Timeouts.Guardrail}, {"timeouts.shutdown", c.Timeouts.Shutdown}} {
		if t.d <= 0 {
			return fmt.Errorf("%s: %s is not a positive duration", t.name, t.d)
		}
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"git.timeouts.list", c.Git.Timeouts.List}, {"git.timeouts.fetch", c.Git.Timeouts.Fetch}, {"git.timeouts.push", c.Git.Timeouts.Push}} {
		if t.d < 0 {
			return fmt.Errorf("%s: %s is negative", t.name, t.d)
		}
	}
	if err := c.checkSharding(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	if err := c.Notifications.Check(); err != nil {
		return err
	}
	if err := c.OTLP.Check(); err != nil {
		return err
	}
	return c.Plans.Check()
}

// namespaceName is what a Kubernetes namespace, or a cluster, may be
// called: a DNS-1123 label.
var namespaceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// StateDSN is the store to open: State, or a SQLite file in DataDir.
func (c Config) StateDSN() string {
	if c.State != "" {
		return c.State
	}
	return "sqlite://" + filepath.Join(c.DataDir, "state.db")
}

// Secret reads a secret from the environment variable env, else from file;
// "" when neither is set. Surrounding white space is dropped.
func Secret(env, file string) (string, error) {
	if v := os.Getenv(env); v != "" {
		return strings.TrimSpace(v), nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", file)
	}
	return s, nil
}

// checkSharding refuses sharding where it cannot work, and timings that
// cannot keep two replicas off one plan.
func (c Config) checkSharding() error {
	sh := c.Kubernetes.Sharding
	if !sh.Enabled {
		return nil
	}
	switch {
	case c.Kubernetes.LeaderElection.Enabled:
		return errors.New("kubernetes.sharding and kubernetes.leaderElection are both enabled: choose one (sharding shares the plans among the replicas, leader election has one replica do all)")
	case c.Docker.Host != "" || c.Docker.ComposeProject != "":
		return errors.New("kubernetes.sharding: the Docker driver drives the engine of the replica that runs it, so its plans cannot be shared among replicas: run one replica, without sharding, for Docker plans")
	case !namespaceName.MatchString(sh.Name):
		return fmt.Errorf("kubernetes.sharding.name: %q is not a DNS-1123 label", sh.Name)
	case sh.Namespace != "" && !namespaceName.MatchString(sh.Namespace):
		return fmt.Errorf("kubernetes.sharding.namespace: %q is not a namespace name", sh.Namespace)
	case strings.HasPrefix(c.StateDSN(), "sqlite:"):
		return errors.New("kubernetes.sharding: the replicas must share their store: set state to a postgres:// DSN (a SQLite file is one replica's)")
	}
	if err := leader.CheckSharding(c.ShardingSettings("")); err != nil {
		return fmt.Errorf("kubernetes.sharding: %w", err)
	}
	return nil
}

// ShardingSettings are the sharding settings as package leader takes
// them, the Leases in namespace when the configuration names none.
func (c Config) ShardingSettings(namespace string) leader.Sharding {
	sh := c.Kubernetes.Sharding
	return leader.Sharding{Namespace: cmp.Or(sh.Namespace, namespace), Name: sh.Name, Shards: sh.Shards,
		Durations:   leader.Durations{Lease: sh.LeaseDuration, Renew: sh.RenewDeadline, Retry: sh.RetryPeriod},
		StepTimeout: c.Timeouts.Step}
}
