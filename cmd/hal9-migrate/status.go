package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
)

// envPrefix starts the environment variables the commands read: the
// daemon's flags (--poll is HAL9_MIGRATE_POLL) and its secrets.
const envPrefix = "HAL9_MIGRATE_"

// envDaemon names the daemon's URL for the commands that ask it.
const envDaemon = envPrefix + "DAEMON"

// configEnv names the daemon's config file, for the daemon and for plan
// backtest, which takes its prometheus: settings.
const configEnv = envPrefix + "CONFIG"

func newStatusCmd() *cobra.Command {
	var (
		daemonURL    string
		statusDir    string
		statusBranch string
		detailed     bool
		watch        bool
		interval     = intervalFlag(5 * time.Second)
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show where each migration is",
		Long: `Status shows each migration's position, target, state and why. It asks the
daemon's API when --daemon (or $HAL9_MIGRATE_DAEMON) names it; without a
daemon it reads the status files the daemon commits to the plan repository,
which say where each migration was at its last transition.

--detailed adds the timeline, the guardrails' latest readings (from a daemon
only), conditions, failed positions and recent history. --watch prints again
every --interval until interrupted.`,
		Example: `  # From the daemon
  hal9-migrate status --daemon http://hal9-migrate:8080 --detailed

  # From the status files of the repository around the current directory
  hal9-migrate status

  # Follow one migration, as JSON
  hal9-migrate status --plan shop --watch --interval 5s -o json`,
		Args: cobra.NoArgs,
	}
	rf := addRepoFlags(cmd)
	cmd.Flags().Lookup("path").Hidden = true
	format := addFormatFlag(cmd, "text", "json", "yaml")
	f := cmd.Flags()
	f.StringVar(&daemonURL, "daemon", os.Getenv(envDaemon), "the daemon's `URL` (default $HAL9_MIGRATE_DAEMON; empty: read the status files)")
	f.StringVar(&statusDir, "status-dir", "status", "the `folder` of the status files in the repository")
	f.StringVar(&statusBranch, "status-branch", os.Getenv(envPrefix+"STATUS_BRANCH"), "the `branch` the daemon commits status files to, when it has one of its own (default $HAL9_MIGRATE_STATUS_BRANCH, else --branch)")
	f.BoolVar(&detailed, "detailed", false, "show the timeline, guardrails, conditions and history")
	f.BoolVarP(&watch, "watch", "w", false, "print again every --interval until interrupted")
	f.Var(&interval, "interval", "how often --watch prints: seconds (10) or a duration (1m)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		read := func(ctx context.Context) ([]daemon.Migration, error) {
			var ms []daemon.Migration
			var err error
			if daemonURL != "" {
				ms, err = fetchMigrations(ctx, daemonURL)
			} else {
				o := rf.options()
				o.Path, o.MustExist = statusDir, true
				if statusBranch != "" {
					o.Branch = statusBranch
				}
				ms, err = readStatusFiles(ctx, o)
				if errors.Is(err, gitops.ErrNoRepository) && rf.repo == "" {
					return nil, &usageError{err: fmt.Errorf("%w: status asks the daemon (--daemon URL, or $%s) or reads the status files of the plan repository (run it inside a clone, or name one with --repo URL)", err, envDaemon), command: cmd.CommandPath()}
				}
			}
			if err != nil || rf.plan == "" {
				return ms, err
			}
			for _, m := range ms {
				if m.Name == rf.plan {
					return []daemon.Migration{m}, nil
				}
			}
			return nil, fmt.Errorf("no migration named %q", rf.plan)
		}
		out := cmd.OutOrStdout()
		tty := false
		if f, ok := out.(*os.File); ok {
			tty = term.IsTerminal(int(f.Fd()))
		}
		for first := true; ; first = false {
			ms, err := read(cmd.Context())
			if err != nil {
				return err
			}
			if watch && !first {
				if tty {
					fmt.Fprint(out, "\033[H\033[2J")
				} else if format.value == "text" {
					fmt.Fprintln(out)
				}
			}
			if err := printStatus(out, format.value, ms, detailed, daemonURL != ""); err != nil {
				return err
			}
			if !watch {
				return nil
			}
			select {
			case <-cmd.Context().Done():
				return nil
			case <-time.After(time.Duration(interval)):
			}
		}
	}
	return cmd
}

// fetchMigrations asks the daemon's API.
func fetchMigrations(ctx context.Context, base string) ([]daemon.Migration, error) {
	var list struct {
		Migrations []daemon.Migration `json:"migrations"`
	}
	c := &client{base: strings.TrimRight(base, "/")}
	if err := c.do(ctx, http.MethodGet, "/api/v1/migrations?history=20", nil, &list); err != nil {
		return nil, err
	}
	return list.Migrations, nil
}

// readStatusFiles reads the status files of a branch.
func readStatusFiles(ctx context.Context, o gitops.BranchOptions) ([]daemon.Migration, error) {
	b, err := gitops.OpenBranch(ctx, o)
	if err != nil {
		return nil, err
	}
	var ms []daemon.Migration
	for _, f := range b.Files() {
		if ext := path.Ext(f.Path); ext != ".yaml" && ext != ".yml" {
			continue
		}
		var st daemon.Status
		if err := yaml.Unmarshal(f.Data, &st); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		if st.Kind != "MigrationStatus" {
			continue
		}
		ms = append(ms, daemon.Migration{Name: st.Metadata.Name, StatusBody: st.Status})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no status files under %s/ on branch %s: the daemon has written none yet", o.Path, b.Name())
	}
	return ms, nil
}

func printStatus(w io.Writer, format string, ms []daemon.Migration, detailed, live bool) error {
	switch format {
	case "json":
		return writeJSON(w, map[string]any{"migrations": ms})
	case "yaml":
		return writeYAML(w, map[string]any{"migrations": ms})
	}
	ms, groups := byGroup(ms)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(groups) > 0 {
		fmt.Fprintln(tw, "MIGRATION\tGROUP\tPOSITION\tTARGET\tSTATE\tSINCE")
	} else {
		fmt.Fprintln(tw, "MIGRATION\tPOSITION\tTARGET\tSTATE\tSINCE")
	}
	for _, m := range ms {
		pos := m.Phase
		if pos != "start" {
			pos = fmt.Sprintf("%s %d%%", m.Phase, m.Percentage)
		}
		state := m.State
		if state == "" {
			state = "-"
		}
		since := "-"
		if !m.Since.IsZero() {
			since = time.Since(m.Since).Round(time.Second).String() + " ago"
		}
		name := m.Name
		if len(groups) > 0 {
			group := m.Group
			if group == "" {
				group = "-"
			}
			name += "\t" + group
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, pos, m.Target, state, since)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(groups) > 0 {
		fmt.Fprintln(w)
		for _, g := range groups {
			fmt.Fprintf(w, "group %s: %s (lockstep: every member reaches a step before any goes on)\n", g.name, strings.Join(g.members, ", "))
		}
	}
	for _, m := range ms {
		if !detailed && m.Reason == "" && len(m.Conditions) == 0 && len(waiting(m)) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:", m.Name)
		reason := m.Reason
		if m.Decision != nil {
			reason = m.Decision.Reason
		}
		if reason != "" {
			fmt.Fprintf(w, " %s", reason)
		}
		fmt.Fprintln(w)
		for _, c := range m.Conditions {
			fmt.Fprintf(w, "  ! %s: %s\n", c.Type, c.Message)
		}
		for _, why := range waiting(m) {
			fmt.Fprintf(w, "  waits: %s\n", why)
		}
		if !detailed {
			continue
		}
		if m.Owner != "" {
			fmt.Fprintf(w, "  stepped by replica %s\n", m.Owner)
		}
		if len(m.Timeline) > 0 {
			fmt.Fprintln(w, "  timeline:")
			for _, s := range m.Timeline {
				mark := map[string]string{"done": "✓", "current": "▶", "next": "→", "failed": "✗"}[s.State]
				if mark == "" {
					mark = " "
				}
				fmt.Fprintf(w, "    %s %-18s soak %-8s %s\n", mark, s.Position, s.Soak, s.State)
			}
		}
		if live {
			fmt.Fprintln(w, "  guardrails:")
			if len(m.Guardrails) == 0 {
				fmt.Fprintln(w, "    (no readings yet)")
			}
			for _, g := range m.Guardrails {
				fmt.Fprintf(w, "    %-16s %-9s value %-10s %s", g.Name, g.Health, g.Shown(), g.Bound)
				if g.Detail != "" {
					fmt.Fprintf(w, " (%s)", g.Detail)
				}
				fmt.Fprintln(w)
			}
		}
		for _, fp := range m.Failed {
			// Only a failure under the plan's current commit keeps the
			// daemon out of the position.
			before := ""
			if m.Commit != "" && fp.Commit != m.Commit {
				before = ", before the current commit (allowed again)"
			}
			fmt.Fprintf(w, "  failed %s under %s%s: %s\n", fp.Position, shorthash.Of(fp.Commit), before, fp.Reason)
		}
		if len(m.History) > 0 {
			fmt.Fprintln(w, "  history:")
			for _, h := range m.History {
				fmt.Fprintf(w, "    %s  %-12s %s → %s  %s\n", h.At.UTC().Format(time.DateTime), h.Action, h.From, h.To, h.Reason)
			}
		}
	}
	return nil
}

// statusGroup is a lockstep group as status lists it: its name and its
// members in the order of the listing.
type statusGroup struct {
	name    string
	members []string
}

// byGroup orders ms so that the members of a group follow each other, at
// the place of the first, and returns the groups in the order they come.
func byGroup(ms []daemon.Migration) ([]daemon.Migration, []statusGroup) {
	var groups []statusGroup
	at := map[string]int{}
	for _, m := range ms {
		if m.Group == "" {
			continue
		}
		i, ok := at[m.Group]
		if !ok {
			i = len(groups)
			at[m.Group] = i
			groups = append(groups, statusGroup{name: m.Group})
		}
		groups[i].members = append(groups[i].members, m.Name)
	}
	if len(groups) == 0 {
		return ms, nil
	}
	out := make([]daemon.Migration, 0, len(ms))
	done := map[string]bool{}
	for _, m := range ms {
		switch {
		case m.Group == "":
			out = append(out, m)
		case !done[m.Group]:
			done[m.Group] = true
			for _, o := range ms {
				if o.Group == m.Group {
					out = append(out, o)
				}
			}
		}
	}
	return out, groups
}

// waiting says why a migration waits: the reasons of the gates its next
// move waits on, from the daemon's latest decision when there is one, else
// from its status.
func waiting(m daemon.Migration) []string {
	if m.Decision == nil || m.Decision.Gates == nil {
		return m.Waiting
	}
	var out []string
	for _, g := range m.Decision.Gates {
		if !g.Open {
			out = append(out, g.Reason)
		}
	}
	return out
}
