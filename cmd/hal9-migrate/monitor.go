package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hal9ai/hal9-migrate/daemon"
)

func newMonitorCmd() *cobra.Command {
	var (
		daemonURL string
		dashboard string
		plan      string
		once      bool
		interval  = intervalFlag(2 * time.Second)
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "A live terminal view of the migrations, from the daemon",
		Long: `Monitor redraws, every --interval, a view of the daemon's migrations:

  metrics    each migration's position, target, progress and decision, and
             every guardrail's value against its bound
  logs       the recent history of every migration, newest first
  combined   both
  traces     the daemon's recent cycles as span timelines (sync, evaluate,
             decide, apply, commit), from its in-memory ring: no tracing
             backend needed

In a terminal, press q (or Ctrl-C) to leave; elsewhere, Ctrl-C. --once prints
one frame and exits, for scripts.`,
		Example: `  hal9-migrate monitor --daemon http://hal9-migrate:8080 --dashboard combined`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch dashboard {
			case "metrics", "combined", "logs", "traces":
			default:
				return &usageError{err: fmt.Errorf("--dashboard: %q is not one of metrics, combined, logs, traces", dashboard), command: cmd.CommandPath()}
			}
			if daemonURL == "" {
				return &usageError{err: fmt.Errorf("monitor needs the daemon: set --daemon or $%s", envDaemon), command: cmd.CommandPath()}
			}
			return runMonitor(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), daemonURL, dashboard, plan, time.Duration(interval), once)
		},
	}
	f := cmd.Flags()
	f.StringVar(&daemonURL, "daemon", os.Getenv(envDaemon), "the daemon's `URL` (default $HAL9_MIGRATE_DAEMON)")
	f.StringVar(&dashboard, "dashboard", "combined", "the view: metrics, combined, logs or traces")
	f.StringVar(&plan, "plan", "", "show only the migration with this `name`")
	f.Var(&interval, "interval", "how often the view is redrawn: seconds (2) or a duration (2s)")
	f.BoolVar(&once, "once", false, "print one frame and exit")
	_ = cmd.RegisterFlagCompletionFunc("dashboard", cobra.FixedCompletions([]string{"metrics", "combined", "logs", "traces"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// runMonitor draws frames until ctx ends or the user presses q. On a
// terminal it switches to the alternate screen and raw input, and restores
// both on the way out.
func runMonitor(ctx context.Context, in io.Reader, out io.Writer, url, dashboard, only string, every time.Duration, once bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tty := false
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !once {
		tty = true
	}
	if tty {
		if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			if old, err := term.MakeRaw(int(f.Fd())); err == nil {
				defer term.Restore(int(f.Fd()), old)
			}
		}
		fmt.Fprint(out, "\033[?1049h\033[?25l")
		defer fmt.Fprint(out, "\033[?25h\033[?1049l")
		go func() {
			// q, Q or Ctrl-C (raw mode delivers it as a byte) leaves.
			r := bufio.NewReader(in)
			for {
				b, err := r.ReadByte()
				if err != nil || b == 'q' || b == 'Q' || b == 3 {
					cancel()
					return
				}
			}
		}()
	}
	// One frame of the dashboard asked for, with what fetching it said.
	frame := func(redraw time.Duration) (string, error) {
		if dashboard == "traces" {
			ts, err := fetchTraces(ctx, url, only)
			return renderTraces(ts, err, url, time.Now(), redraw, tty, traceWidth(out)), err
		}
		ms, err := fetchMigrations(ctx, url)
		if only != "" {
			ms = slices.DeleteFunc(ms, func(m daemon.Migration) bool { return m.Name != only })
		}
		return renderMonitor(ms, err, dashboard, url, time.Now(), redraw, tty), err
	}
	for {
		redraw := every
		if once {
			redraw = 0
		}
		f, err := frame(redraw)
		if ctx.Err() != nil {
			return nil
		}
		if tty {
			// Raw mode needs carriage returns.
			f = "\033[H\033[2J" + strings.ReplaceAll(f, "\n", "\r\n")
		}
		fmt.Fprint(out, f)
		if once {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// monitorHeading writes a frame's heading: what it shows, when, how often
// it is redrawn (unless every is 0, a single frame) and how to quit (only
// when interactive: elsewhere q is not read), then why the daemon could
// not be read, if it could not; it reports whether the frame goes on.
func monitorHeading(b *strings.Builder, what string, fetchErr error, now time.Time, every time.Duration, interactive bool) bool {
	fmt.Fprintf(b, "hal9-migrate monitor · %s · %s", what, now.UTC().Format(time.TimeOnly))
	if every > 0 {
		fmt.Fprintf(b, " · every %s", every)
	}
	if interactive {
		b.WriteString(" · q quits")
	}
	b.WriteString("\n\n")
	if fetchErr != nil {
		fmt.Fprintf(b, "cannot reach the daemon: %v\n", fetchErr)
		return false
	}
	return true
}

// renderMonitor draws one frame. Its heading says how often the view is
// redrawn, unless every is 0 (a single frame), and how to quit only when
// interactive: elsewhere q is not read.
func renderMonitor(ms []daemon.Migration, fetchErr error, dashboard, url string, now time.Time, every time.Duration, interactive bool) string {
	var b strings.Builder
	if !monitorHeading(&b, url, fetchErr, now, every, interactive) {
		return b.String()
	}
	if len(ms) == 0 {
		b.WriteString("no migrations\n")
		return b.String()
	}
	if dashboard == "metrics" || dashboard == "combined" {
		ms, groups := byGroup(ms)
		for _, g := range groups {
			fmt.Fprintf(&b, "group %s: %s (lockstep)\n", g.name, strings.Join(g.members, ", "))
		}
		if len(groups) > 0 {
			b.WriteByte('\n')
		}
		for _, m := range ms {
			state := m.State
			if state == "" {
				state = "New"
			}
			group := ""
			if m.Group != "" {
				group = "  group " + m.Group
			}
			fmt.Fprintf(&b, "%s  %s → %s  [%s]  %s%s\n", m.Name, m.Position, m.TargetPos, state, bar(m.Progress, 20), group)
			if m.Decision != nil {
				fmt.Fprintf(&b, "  next: %s — %s\n", m.Decision.Kind, m.Decision.Reason)
			}
			for _, why := range waiting(m) {
				fmt.Fprintf(&b, "  waits: %s\n", why)
			}
			for _, c := range m.Conditions {
				fmt.Fprintf(&b, "  ! %s: %s\n", c.Type, c.Message)
			}
			if m.Driver != nil {
				fmt.Fprintf(&b, "  traffic %d%%  mirror %d%%  stable %d/%d  candidate %d/%d\n", m.Driver.Traffic, m.Driver.Mirror,
					m.Driver.StableReady, m.Driver.StableReplicas, m.Driver.CandidateReady, m.Driver.CandidateReplicas)
			} else if m.DriverErr != "" {
				fmt.Fprintf(&b, "  driver: %s\n", m.DriverErr)
			}
			if len(m.Guardrails) == 0 {
				b.WriteString("  guardrails: no readings (evaluated once the candidate takes traffic)\n")
			}
			for _, g := range m.Guardrails {
				fmt.Fprintf(&b, "  %-18s %-9s %12s  %s", g.Name, g.Health, g.Shown(), g.Bound)
				if g.Detail != "" {
					fmt.Fprintf(&b, "  (%s)", g.Detail)
				}
				b.WriteByte('\n')
			}
			b.WriteByte('\n')
		}
	}
	if dashboard == "logs" || dashboard == "combined" {
		type line struct {
			at   time.Time
			text string
		}
		var lines []line
		for _, m := range ms {
			for _, h := range m.History {
				lines = append(lines, line{h.At, fmt.Sprintf("%s  %-14s %-12s %s → %s  %s", h.At.UTC().Format(time.DateTime), m.Name, h.Action, h.From, h.To, h.Reason)})
			}
		}
		slices.SortStableFunc(lines, func(a, b line) int { return b.at.Compare(a.at) })
		b.WriteString("recent history:\n")
		for i, l := range lines {
			if i == 20 {
				break
			}
			b.WriteString("  " + l.text + "\n")
		}
	}
	return b.String()
}

func bar(f float64, width int) string {
	n := int(f*float64(width) + 0.5)
	n = max(0, min(width, n))
	return strings.Repeat("█", n) + strings.Repeat("░", width-n) + fmt.Sprintf(" %3.0f%%", f*100)
}
