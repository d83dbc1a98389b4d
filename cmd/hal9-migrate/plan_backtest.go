package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// prometheusEnv names the variable that gives backtest's --prometheus its
// default, as the daemon's flags take theirs.
const prometheusEnv = "HAL9_MIGRATE_PROMETHEUS"

// defaultPrometheus is where --prometheus points without the flag or the
// variable.
const defaultPrometheus = "http://localhost:9090"

// shownChanges is how many health changes of a guardrail the text output
// lists; JSON and YAML have all of them.
const shownChanges = 12

func newPlanBacktestCmd() *cobra.Command {
	var (
		name, from, to, prometheus, step, config string
	)
	cmd := &cobra.Command{
		Use:   "backtest PATH --from T [--to T]",
		Short: "Replay a plan's guardrails over Prometheus history",
		Long: `Backtest runs the guardrails of each plan in PATH (a file or a directory) over
what Prometheus recorded between --from and --to, and says what the daemon
would have done: when it would have advanced, paused or rolled back, and why
(the guardrail, its value, its bound and the positions).

Each guardrail's query is run as a range query, one value per --step (the
daemon's evaluation interval, 30s by default), and replayed through the same
evaluation as the daemon's, for and failures windows included, on a clock
that follows the history. The plan's timeline is walked from the start
towards its target with those readings, soaking each step as the daemon
would. Jobs and verify checks are taken as succeeding, and HTTP guardrails
as healthy: the history cannot tell. The walk stops at the first rollback:
after it, the recorded history no longer shows what the plan would have seen.

Prometheus is reached as the daemon reaches it: --config names the daemon's
config file (default $HAL9_MIGRATE_CONFIG), whose prometheus: section gives
the URL and how to authenticate (bearerTokenFile, basicAuth, tls) and the
query timeout. --prometheus (default $HAL9_MIGRATE_PROMETHEUS) overrides its
URL; with neither, http://localhost:9090.

Times are RFC 3339 (2026-11-27T10:00:00Z), Unix seconds, now, or a duration
before now: -2h, -1d12h, now-30m.`,
		Example: `  # Would the plan have survived last night?
  hal9-migrate plan backtest plans/hal9-hierarchical.yaml --from -12h

  # A given window, evaluating every minute, as JSON
  hal9-migrate plan backtest plans --plan shop --prometheus http://prometheus:9090 \
    --from 2026-11-27T00:00:00Z --to 2026-11-28T00:00:00Z --step 1m -o json

  # Through an authenticating Prometheus, with the daemon's settings
  hal9-migrate plan backtest plans --config /etc/hal9-migrate/config.yaml --from -1d`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("expected one PATH, a plan file or a directory, got %d arguments", len(args)), command: cmd.CommandPath()}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "plan", "", "backtest only the plan with this `name`")
	cmd.Flags().StringVar(&from, "from", "", "start of the history: RFC 3339, Unix seconds, now or -DURATION (required)")
	cmd.Flags().StringVar(&to, "to", "now", "end of the history, as --from")
	cmd.Flags().StringVar(&prometheus, "prometheus", os.Getenv(prometheusEnv), "Prometheus base `URL` (default $"+prometheusEnv+", else the config file's, else "+defaultPrometheus+")")
	cmd.Flags().StringVar(&config, "config", os.Getenv(configEnv), "the daemon's config `file`, for its prometheus: settings (default $"+configEnv+")")
	cmd.Flags().StringVar(&step, "step", "30s", "time between two evaluations: a `duration` such as 30s, 1m or 1h")
	format := addFormatFlag(cmd, "text", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		usage := func(format string, a ...any) error {
			return &usageError{err: fmt.Errorf(format, a...), command: cmd.CommandPath()}
		}
		if from == "" {
			return usage("--from is required: the start of the history to replay, such as -2h or 2026-11-27T10:00:00Z")
		}
		// Whole seconds: relative times read better, and two runs a moment
		// apart ask Prometheus the same.
		now := time.Now().Truncate(time.Second)
		start, err := guardrails.ParseTime(from, now)
		if err != nil {
			return usage("--from: %v", err)
		}
		end, err := guardrails.ParseTime(to, now)
		if err != nil {
			return usage("--to: %v", err)
		}
		if !start.Before(end) {
			return usage("--from %s is not before --to %s", start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339))
		}
		every, err := guardrails.ParseDuration(step)
		if err != nil || every <= 0 {
			return usage("--step %q: want a positive duration such as 30s or 1m", step)
		}
		opts := guardrails.BacktestOptions{From: start.UTC(), To: end.UTC(), Step: every}
		prom, err := backtestPrometheus(config, prometheus)
		if err != nil {
			if config == "" {
				return usage("--prometheus: %v", err)
			}
			return err
		}
		return runBacktest(cmd, format.value, args[0], name, prom, opts)
	}
	return cmd
}

// backtestPrometheus connects to Prometheus as the daemon would: with the
// prometheus: settings of its config file, when one is named, and url over
// that file's URL.
func backtestPrometheus(configFile, url string) (*guardrails.Prometheus, error) {
	var cfg guardrails.PrometheusConfig
	if configFile != "" {
		c, err := daemon.LoadConfig(configFile, daemon.DefaultConfig())
		if err != nil {
			return nil, err
		}
		cfg = c.Prometheus
	}
	if url != "" {
		cfg.URL = url
	}
	if cfg.URL == "" {
		cfg.URL = defaultPrometheus
	}
	prom, err := guardrails.NewPrometheus(cfg)
	if err != nil && configFile != "" {
		return nil, fmt.Errorf("prometheus settings of %s: %w", configFile, err)
	}
	return prom, err
}

func runBacktest(cmd *cobra.Command, format, path, name string, prom *guardrails.Prometheus, o guardrails.BacktestOptions) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	plans, err := loadPlans(stderr, path, name)
	if err != nil {
		return err
	}
	results := make([]*guardrails.Backtest, len(plans))
	for i, p := range plans {
		b, err := guardrails.RunBacktest(cmd.Context(), p, guardrailProviders(prom, nil), o)
		if err != nil {
			return fmt.Errorf("backtest %s: %w", p.Metadata.Name, err)
		}
		results[i] = b
	}

	return writeEach(stdout, format, results, func(w io.Writer, b *guardrails.Backtest) error {
		return writeBacktest(w, b, prom.URL())
	})
}

// stamp writes a time of a backtest in UTC, to the millisecond when the
// step is that fine.
func stamp(t time.Time) string {
	return t.UTC().Round(time.Millisecond).Format(time.RFC3339Nano)
}

// writeBacktest writes one plan's backtest: what the daemon would have done,
// then how each guardrail's health changed, then the outcome.
func writeBacktest(w io.Writer, b *guardrails.Backtest, prometheus string) error {
	fmt.Fprintf(w, "%s (%s)\n", b.Plan, b.File)
	source := ""
	for _, g := range b.Guardrails {
		if g.Replayed {
			source = ", from " + prometheus
			break
		}
	}
	fmt.Fprintf(w, "history from %s to %s, every %s%s; target %s\n\n", stamp(b.From), stamp(b.To), b.Step, source, b.Target)

	rows := [][]string{{"TIME", "ACTION", "FROM", "TO", "WHY"}}
	for _, e := range b.Events {
		to := "-"
		if e.To != e.From {
			to = e.To.String()
		}
		rows = append(rows, []string{stamp(e.At), e.Action, e.From.String(), to, e.Reason})
	}
	if len(b.Events) == 0 {
		fmt.Fprintln(w, "The daemon would have done nothing.")
	} else if err := writeTable(w, "", rows, nil); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(b.Guardrails) == 0 {
		fmt.Fprintln(w, "Guardrails: none (nothing triggers a rollback)")
	} else {
		fmt.Fprintln(w, "Guardrails:")
	}
	for _, g := range b.Guardrails {
		fmt.Fprintf(w, "  %s (%s):", g.Name, g.Bound)
		if !g.Replayed {
			fmt.Fprintf(w, " not replayed: %s\n", g.Note)
			continue
		}
		var changes []string
		for i, c := range g.Changes {
			if i == shownChanges {
				changes = append(changes, fmt.Sprintf("and %d more changes", len(g.Changes)-shownChanges))
				break
			}
			changes = append(changes, describeReading(c))
		}
		fmt.Fprintf(w, " %s\n", strings.Join(changes, "; "))
		if g.Worst != nil {
			fmt.Fprintf(w, "    worst %s at %s\n", g.Worst.Shown(), stamp(g.Worst.Since))
		}
	}

	for _, e := range b.Events {
		if e.Action == string(reconcile.StartJob) || e.Action == string(reconcile.RunChecks) {
			fmt.Fprintln(w, "\nJobs and verify checks are taken as succeeding: a backtest runs none.")
			break
		}
	}

	fmt.Fprintln(w)
	for _, ev := range b.Events {
		switch ev.Action {
		case string(reconcile.Rollback):
			fmt.Fprintf(w, "Would have rolled back at %s: %s\n", stamp(ev.At), ev.Reason)
		case string(reconcile.Freeze):
			fmt.Fprintf(w, "Would have frozen at %s: %s\n", stamp(ev.At), ev.Reason)
		}
	}
	e := b.End
	fmt.Fprintf(w, "At the end, %s: %s, %s (%s)\n", stamp(e.At), e.Position, strings.ToLower(e.Status), e.Reason)
	return nil
}

// describeReading writes a health change: "Pending at 10:43:00Z (0.2 over
// max 0.05; ...)".
func describeReading(r reconcile.Reading) string {
	s := string(r.Health) + " from " + stamp(r.Since)
	switch r.Health {
	case reconcile.Healthy:
		s += " (" + r.Shown() + ")"
	case reconcile.Pending, reconcile.Breached, reconcile.NoData, reconcile.Error, reconcile.Measuring:
		s += " (" + r.Detail + ")"
	}
	return s
}
