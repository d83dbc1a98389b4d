package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

func newPreCheckCmd() *cobra.Command {
	var (
		deep       bool
		last       bool
		components []string
	)
	cmd := &cobra.Command{
		Use:   "pre-check",
		Short: "Check that the daemon can reach and drive everything the plans name",
		Long: `Pre-check asks the daemon to reach every part its plans need: the plan
repository (and whether every plan is valid at its head), each plan's driver
and workloads (stable ready; candidate ready once the migration has started)
and Prometheus. --deep also runs every guardrail and check query once and
warns of those that return no data now, which onNoData then decides about.

The daemon does this with its own credentials, so pre-check needs its API
token (--api-token-file or $HAL9_MIGRATE_API_TOKEN). Without one, --last
shows the result of the last pre-check the daemon ran, and when it ran.

It exits 1 when anything failed; warnings alone do not fail it.`,
		Example: `  hal9-migrate pre-check --deep --daemon http://hal9-migrate:8080 --api-token-file ~/.hal9-token
  hal9-migrate pre-check --components git driver
  hal9-migrate pre-check --last`,
		Args: usageArgs(cobra.ArbitraryArgs),
	}
	af := addAPIFlags(cmd)
	cmd.Flags().Lookup("plan").Hidden = true
	format := addFormatFlag(cmd, "text", "json", "yaml")
	cmd.Flags().BoolVar(&deep, "deep", false, "also run every guardrail and check query once")
	cmd.Flags().BoolVar(&last, "last", false, "show the last pre-check the daemon ran instead of running one (needs no token)")
	cmd.Flags().StringSliceVar(&components, "components", nil, "check only these: "+strings.Join(daemon.Components, ", ")+" (comma- or space-separated)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		// The guide writes --components git driver prometheus: the
		// words after the flag arrive as arguments.
		components = append(components, args...)
		if last && (deep || len(components) > 0) {
			return &usageError{err: fmt.Errorf("--last shows the last result as it is: --deep and --components choose what a new pre-check runs"), command: cmd.CommandPath()}
		}
		c, err := af.client(cmd, false)
		if err != nil {
			return err
		}
		path := "/api/v1/precheck/last"
		if !last {
			c.token, err = af.token(cmd, "pre-check has the daemon reach the plan repository, the workloads and Prometheus with its own credentials (--last shows the last result without a token)")
			if err != nil {
				return err
			}
			q := url.Values{}
			if deep {
				q.Set("deep", "true")
			}
			if len(components) > 0 {
				q.Set("components", strings.Join(components, ","))
			}
			path = "/api/v1/precheck?" + q.Encode()
		}
		var res daemon.PrecheckResult
		if err := c.do(cmd.Context(), http.MethodGet, path, nil, &res); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		switch format.value {
		case "json":
			err = writeJSON(out, res)
		case "yaml":
			err = writeYAML(out, res)
		default:
			if last {
				fmt.Fprintf(out, "the last pre-check ran at %s (%s ago)\n", res.At.Format(time.RFC3339), time.Since(res.At).Round(time.Second))
			}
			err = printPrecheck(out, res.Checks, res.OK)
		}
		if err != nil {
			return err
		}
		if !res.OK {
			return errReported
		}
		return nil
	}
	return cmd
}

func printPrecheck(w io.Writer, items []daemon.PrecheckItem, ok bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, it := range items {
		mark := map[string]string{"ok": "✓", "warning": "!", "failed": "✗"}[it.Result]
		subject := it.Subject
		if it.Plan != "" {
			subject = it.Plan + ": " + subject
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, it.Component, subject, it.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ok {
		fmt.Fprintln(w, "pre-check passed")
	} else {
		fmt.Fprintln(w, "pre-check failed")
	}
	return nil
}

func newVerifyCmd() *cobra.Command {
	var (
		tests      []string
		full       bool
		report     bool
		reportFile string
		wait       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify [--tests NAME…] [--full] [--report]",
		Short: "Run a plan's named checks now and report pass or fail",
		Long: `Verify asks the daemon to run checks of a plan's spec.verify now, outside
the plan's steps: jobs through the plan's driver, queries against Prometheus,
HTTP requests. --tests names them (comma- or space-separated); --full runs
every check of the plan. --report writes a Markdown report (to
--report-file, or standard output), for a change record.

It needs the daemon's API token. The daemon stops the checks at its verify
deadline (api.verifyTimeout, default 1h): a job still running then is
reported as failed. --timeout is how long this command waits for the answer.

It exits 1 when a check failed. A plan with no checks (no spec.verify) has
nothing to verify: --full then says so, in the report too, rather than that
anything passed, and exits 0.`,
		Example: `  hal9-migrate verify --tests data-integrity state-consistency
  hal9-migrate verify --full --report --report-file verify-$(date +%F).md`,
		Args: usageArgs(cobra.ArbitraryArgs),
	}
	af := addAPIFlags(cmd)
	format := addFormatFlag(cmd, "text", "json", "yaml")
	f := cmd.Flags()
	f.StringSliceVar(&tests, "tests", nil, "the checks to run")
	f.BoolVar(&full, "full", false, "run every check of the plan")
	f.BoolVar(&report, "report", false, "write a Markdown report")
	f.StringVar(&reportFile, "report-file", "", "the report's `file` (default: standard output)")
	f.DurationVar(&wait, "timeout", daemon.DefaultDeadlines().Verify+time.Minute, "how long to wait for the daemon's answer")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		tests = append(tests, args...)
		if full == (len(tests) > 0) {
			return &usageError{err: fmt.Errorf("name the checks with --tests, or run them all with --full"), command: cmd.CommandPath()}
		}
		c, m, err := af.migration(cmd, true)
		if err != nil {
			return err
		}
		c.wait = wait
		started := time.Now().UTC()
		var res struct {
			Passed  bool                     `json:"passed"`
			Results []reconcile.Verification `json:"results"`
		}
		if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/migrations/"+url.PathEscape(m)+"/verify",
			map[string]any{"tests": tests}, &res); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		switch {
		case report:
			w := out
			if reportFile != "" {
				file, err := os.Create(reportFile)
				if err != nil {
					return fmt.Errorf("report: %w", err)
				}
				defer file.Close()
				w = file
			}
			writeReport(w, m, started, res.Passed, res.Results)
			if reportFile != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote the report to %s\n", reportFile)
			}
		case format.value == "json":
			err = writeJSON(out, res)
		case format.value == "yaml":
			err = writeYAML(out, res)
		case len(res.Results) == 0:
			fmt.Fprintf(out, "nothing to verify: %s\n", noChecks(m))
		default:
			for _, v := range res.Results {
				mark := "✓"
				if !v.Passed {
					mark = "✗"
				}
				fmt.Fprintf(out, "%s %s (%s, %s): %s\n", mark, v.Name, v.Kind, v.Took.Round(time.Millisecond), v.Message)
			}
		}
		if err != nil {
			return err
		}
		if !res.Passed {
			return errReported
		}
		return nil
	}
	return cmd
}

// noChecks says why a verification ran nothing: only --full runs no check,
// and only when the plan has none (the daemon refuses unknown names).
func noChecks(migration string) string {
	return "the plan of " + migration + " has no checks (spec.verify is empty), so nothing was run"
}

// writeReport writes a verification as Markdown.
func writeReport(w io.Writer, migration string, at time.Time, passed bool, vs []reconcile.Verification) {
	if len(vs) == 0 {
		fmt.Fprintf(w, "# Verification of %s: nothing to verify\n\n", migration)
		fmt.Fprintf(w, "Run %s: %s.\n", at.Format(time.RFC3339), noChecks(migration))
		return
	}
	verdict := "passed"
	if !passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "# Verification of %s: %s\n\n", migration, verdict)
	fmt.Fprintf(w, "Run %s.\n\n", at.Format(time.RFC3339))
	fmt.Fprintln(w, "| check | kind | result | took | detail |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, v := range vs {
		result := "pass"
		if !v.Passed {
			result = "**fail**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", v.Name, v.Kind, result, v.Took.Round(time.Millisecond), strings.ReplaceAll(v.Message, "|", `\|`))
	}
	for _, v := range vs {
		if v.Logs == "" {
			continue
		}
		fmt.Fprintf(w, "\n## Output of %s\n\n```\n%s\n```\n", v.Name, strings.TrimRight(v.Logs, "\n"))
	}
}
