package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
)

func newPlanDiffCmd() *cobra.Command {
	var rev string
	cmd := &cobra.Command{
		Use:   "diff [--base REV] [PATH] | diff OLD NEW",
		Short: "Show what a change to the plans will make the daemon do",
		Long: `Diff compares the plans at a Git revision (--base, default HEAD) of the
repository around the current directory with the plans in the working tree,
under PATH (default plans). Given two paths, it compares OLD with NEW instead.

For each plan it says whether it was added, removed, modified or left
unchanged; whether its target advances or rolls back, from where to where;
the steps the daemon takes on the way and the least time they need; and what
else changed: guardrails, phases, checks, features, rollback, driver.

Invalid plans in the working tree (or NEW) are reported and fail the command;
invalid plans at the base revision (or in OLD) are reported as a warning and
treated as absent. The markdown format suits a pull request comment.`,
		Example: `  # What the uncommitted changes to ./plans will do
  hal9-migrate plan diff

  # In CI: what the pull request will do, as a comment
  hal9-migrate plan diff --base origin/main --format markdown plans

  # Compare two files
  hal9-migrate plan diff old.yaml new.yaml`,
		Args: usageArgs(cobra.RangeArgs(0, 2)),
	}
	cmd.Flags().StringVar(&rev, "base", "HEAD", "the Git `revision` to compare the working tree with")
	format := addFormatFlag(cmd, "text", "markdown", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
		v, err := plan.NewValidator()
		if err != nil {
			return err
		}
		var before, after []*plan.Plan
		if len(args) == 2 {
			if cmd.Flags().Changed("base") {
				return &usageError{err: errors.New("--base compares with Git; it cannot be used with two paths"), command: cmd.CommandPath()}
			}
			before, after, err = diffPaths(stderr, v, args[0], args[1])
		} else {
			path := "plans"
			if len(args) == 1 {
				path = args[0]
			}
			before, after, err = diffGit(stderr, v, rev, path)
		}
		if err != nil {
			return err
		}
		changes := plan.Compare(before, after)
		if changes == nil {
			changes = []plan.Change{}
		}
		switch format.value {
		case "json":
			return writeJSON(stdout, changes)
		case "yaml":
			return writeYAML(stdout, changes)
		case "markdown":
			return writeMarkdownDiff(stdout, changes)
		}
		return writeTextDiff(stdout, changes)
	}
	return cmd
}

// diffGit loads the plans under path at revision rev and in the working tree.
func diffGit(stderr io.Writer, v *plan.Validator, rev, path string) (before, after []*plan.Plan, err error) {
	sources, err := gitops.ReadPlans(".", rev, path)
	if err != nil {
		return nil, nil, err
	}
	before = baseline(stderr, v.Validate(sources), "at "+rev)

	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if len(sources) == 0 {
			return nil, nil, fmt.Errorf("%s: no such file or directory, in the working tree or at %s", path, rev)
		}
		return before, nil, nil // every plan was removed
	}
	after, err = current(stderr, v, path)
	return before, after, err
}

// diffPaths loads the plans in two files or directories.
func diffPaths(stderr io.Writer, v *plan.Validator, oldPath, newPath string) (before, after []*plan.Plan, err error) {
	// A missing OLD is a mistake, not a plan that was absent.
	if _, err := os.Stat(oldPath); err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			err = pe.Err
		}
		return nil, nil, fmt.Errorf("%s: %w", oldPath, err)
	}
	set, _ := v.Load(oldPath)
	before = baseline(stderr, set, "in "+oldPath)
	after, err = current(stderr, v, newPath)
	return before, after, err
}

// baseline returns the valid plans of the side compared against, warning
// about the invalid ones: a broken plan in the past must not block showing
// what the fix does.
func baseline(stderr io.Writer, set *plan.Set, where string) []*plan.Plan {
	if len(set.Errors) > 0 {
		fmt.Fprintf(stderr, "hal9-migrate: warning: plans %s with errors are treated as absent:\n", where)
		for _, e := range set.Errors {
			fmt.Fprintf(stderr, "  %s\n", e.Error())
		}
	}
	return set.Plans
}

// current returns the plans of the side being proposed, which must all be
// valid.
func current(stderr io.Writer, v *plan.Validator, path string) ([]*plan.Plan, error) {
	set, _ := v.Load(path)
	if len(set.Errors) > 0 {
		printErrors(stderr, set.Errors)
		fmt.Fprintf(stderr, "%s in %s\n", plural(len(set.Errors), "error"), path)
		return nil, errReported
	}
	return set.Plans, nil
}

// relationLines say whom else a change moves: the other members of the
// plan's group (a member's target moves the whole group) and the plans
// whose gates name it.
func relationLines(c plan.Change, quote func(string) string) []string {
	var out []string
	if len(c.Members) > 0 {
		var ms []string
		for _, m := range c.Members {
			how := "target unchanged"
			switch {
			case m.Status == plan.StatusRemoved:
				how = "removed"
			case m.Move == plan.MoveAdvance:
				how = "target advanced too"
			case m.Move == plan.MoveRollback:
				how = "target rolled back too"
			}
			ms = append(ms, quote(m.Plan)+" ("+how+")")
		}
		out = append(out, "moves group "+quote(c.Group)+" in lockstep: "+strings.Join(ms, ", "))
		if c.Partial {
			out = append(out, "warning: "+partialWarning(c, quote))
		}
	} else if c.Group != "" && c.Move != plan.MoveNone {
		out = append(out, "member of group "+quote(c.Group)+" (no other member among these plans)")
	}
	for _, d := range c.Dependants {
		out = append(out, "affects "+quote(d.Plan)+", which waits on it: "+strings.Join(d.Gates, "; "))
	}
	return out
}

// partialWarning says that only some members of a group moved.
func partialWarning(c plan.Change, quote func(string) string) string {
	var still []string
	for _, m := range c.Members {
		if m.Move != c.Move {
			still = append(still, quote(m.Plan))
		}
	}
	if c.Move == plan.MoveAdvance {
		return fmt.Sprintf("only some members' targets moved (not %s): group %s goes on only as far as the lowest member's target",
			strings.Join(still, ", "), quote(c.Group))
	}
	return fmt.Sprintf("only some members' targets moved (not %s): the targets of the other members of group %s stay where they are",
		strings.Join(still, ", "), quote(c.Group))
}

// headline says in one line what a change does: "advance canary 5% →
// canary 25%", "roll back ...", "new plan, ...", "removed".
func headline(c plan.Change) string {
	var parts []string
	switch c.Status {
	case plan.StatusAdded:
		parts = append(parts, "new plan")
	case plan.StatusRemoved:
		s := "removed"
		if c.From != nil {
			s += ", its target was " + c.From.String()
		}
		return s
	case plan.StatusUnchanged:
		return "unchanged"
	}
	switch c.Move {
	case plan.MoveAdvance:
		parts = append(parts, "advance "+c.From.String()+" → "+c.To.String())
	case plan.MoveRollback:
		parts = append(parts, "roll back "+c.From.String()+" → "+c.To.String())
	default:
		parts = append(parts, "target stays at "+c.To.String())
	}
	return strings.Join(parts, ", ")
}

// pointOfNoReturn returns the step of an advance that completes an
// irreversible phase, if any: past it a breach no longer rolls back.
func pointOfNoReturn(c plan.Change) (plan.Step, bool) {
	if c.Move != plan.MoveAdvance {
		return plan.Step{}, false
	}
	for _, s := range c.Steps {
		if s.Irreversible {
			return s, true
		}
	}
	return plan.Step{}, false
}

const noReturn = "once it completes, a breach freezes the migration instead of rolling back past it"

// route says how the daemon gets to the new target and how long that takes
// at least.
func route(c plan.Change) string {
	switch c.Move {
	case plan.MoveAdvance:
		s := fmt.Sprintf("%s, least time %s", plural(len(c.Steps), "step"), long(c.Least))
		if jobs := jobTimeouts(c.Steps); jobs > 0 {
			s += ", plus up to " + long(jobs) + " of jobs"
		}
		return s
	case plan.MoveRollback:
		switch {
		case c.NoReturn == nil:
			return "straight to " + c.To.String() + ", no soak on the way down"
		case c.Forced:
			s := "straight to " + c.To.String() + ", forced past the point of no return " + c.NoReturn.String()
			if c.Restore != "" {
				s += ", restoring checkpoint " + c.Restore
			}
			return s
		}
		return "back to " + c.NoReturn.String() + " only, and holds there (Frozen)"
	}
	return ""
}

// noReturnBack says why a rollback stops at a point of no return and how
// to go past it.
func noReturnBack(c plan.Change, quote func(string) string) string {
	return fmt.Sprintf("once its phase has completed, a lowered target does not move the daemon back past it; a forced rollback does (%s, which annotates the plan with %s)",
		quote("hal9-migrate rollback --force"), quote(plan.ForceRollbackAnnotation+": "+c.To.String()))
}

func jobTimeouts(steps []plan.Step) plan.Duration {
	var d plan.Duration
	for _, s := range steps {
		if s.Run != nil {
			d += s.Run.Timeout
		}
	}
	return d
}

// stepRow describes one step of an advance: position, soak, on entering,
// before leaving. The last step is the target, where the daemon stays.
func stepRow(s plan.Step, last bool) []string {
	enter, leave := stepActions(s, true)
	soak := "-"
	if s.Soak > 0 && !last {
		soak = s.Soak.String()
	}
	if last {
		leave = []string{"(target: stays here)"}
	}
	return []string{s.Position.String(), soak, orDash(enter), orDash(leave)}
}

// editLine says what changed in a part of a plan: "guardrail error-rate
// changed: max: 0.05 → 0.02". quote formats the part's name, escape the
// detail.
func editLine(e plan.SectionChange, quote, escape func(string) string) string {
	s := e.Section
	if e.Name != "" {
		s += " " + quote(e.Name)
	}
	s += " " + e.Kind
	if e.Detail != "" {
		s += ": " + escape(e.Detail)
	}
	return s
}

func same(s string) string { return s }

// writeTextDiff writes a section per changed plan, then the unchanged ones
// in a line.
func writeTextDiff(w io.Writer, changes []plan.Change) error {
	var unchanged []string
	n := 0
	for _, c := range changes {
		if c.Status == plan.StatusUnchanged {
			unchanged = append(unchanged, c.Plan)
			continue
		}
		if n > 0 {
			fmt.Fprintln(w)
		}
		n++
		fmt.Fprintf(w, "%s (%s): %s\n", c.Plan, c.File, headline(c))
		if r := route(c); r != "" {
			fmt.Fprintf(w, "  %s\n", r)
		}
		if c.Move == plan.MoveAdvance && c.Status != plan.StatusRemoved {
			rows := [][]string{{"POSITION", "SOAK", "ON ENTERING", "BEFORE LEAVING"}}
			for i, s := range c.Steps {
				rows = append(rows, stepRow(s, i == len(c.Steps)-1))
			}
			if err := writeTable(w, "    ", rows, nil); err != nil {
				return err
			}
		}
		if s, ok := pointOfNoReturn(c); ok {
			fmt.Fprintf(w, "  point of no return: %s; %s\n", s.Position, noReturn)
		}
		if c.NoReturn != nil && !c.Forced {
			fmt.Fprintf(w, "  point of no return: %s; %s\n", c.NoReturn, noReturnBack(c, same))
		}
		for _, l := range relationLines(c, same) {
			fmt.Fprintf(w, "  %s\n", l)
		}
		if len(c.Edits) > 0 {
			fmt.Fprintln(w, "  other changes:")
			for _, e := range c.Edits {
				fmt.Fprintf(w, "    %s\n", editLine(e, same, same))
			}
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "No plan changes.")
	}
	if len(unchanged) > 0 {
		if n > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Unchanged: %s\n", strings.Join(unchanged, ", "))
	}
	return nil
}

// writeMarkdownDiff writes a section per changed plan, for a pull request
// comment.
func writeMarkdownDiff(w io.Writer, changes []plan.Change) error {
	var unchanged []string
	n := 0
	for _, c := range changes {
		if c.Status == plan.StatusUnchanged {
			unchanged = append(unchanged, "`"+c.Plan+"`")
			continue
		}
		if n > 0 {
			fmt.Fprintln(w)
		}
		n++
		fmt.Fprintf(w, "### %s: %s\n\n", c.Plan, headline(c))
		facts := []string{"`" + c.File + "`"}
		if r := route(c); r != "" {
			facts = append(facts, r)
		}
		fmt.Fprintf(w, "%s\n", strings.Join(facts, " · "))
		if c.Move == plan.MoveAdvance && c.Status != plan.StatusRemoved {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| Step | Position | Soak | On entering | Before leaving |")
			fmt.Fprintln(w, "|---:|---|---|---|---|")
			for i, s := range c.Steps {
				row := stepRow(s, i == len(c.Steps)-1)
				for j, cell := range row {
					if cell == "-" {
						cell = ""
					}
					row[j] = strings.ReplaceAll(markdownText(cell), "\n", "<br>")
				}
				fmt.Fprintf(w, "| %d | %s |\n", i+1, strings.Join(row, " | "))
			}
		}
		if s, ok := pointOfNoReturn(c); ok {
			fmt.Fprintf(w, "\n> [!WARNING]\n> Passes a point of no return at %s: %s.\n", s.Position, noReturn)
		}
		if c.NoReturn != nil && !c.Forced {
			fmt.Fprintf(w, "\n> [!WARNING]\n> Stops at %s, a point of no return: %s.\n", c.NoReturn, noReturnBack(c, markdownCode))
		}
		if c.Partial {
			fmt.Fprintf(w, "\n> [!WARNING]\n> O%s.\n", strings.TrimPrefix(partialWarning(c, markdownCode), "o"))
		}
		if lines := relationLines(c, markdownCode); len(lines) > 0 {
			fmt.Fprintln(w)
			for _, l := range lines {
				if !strings.HasPrefix(l, "warning: ") {
					fmt.Fprintf(w, "- %s\n", l)
				}
			}
		}
		if len(c.Edits) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "**Other changes**")
			fmt.Fprintln(w)
			for _, e := range c.Edits {
				fmt.Fprintf(w, "- %s\n", editLine(e, markdownCode, markdownCode))
			}
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "No plan changes.")
	}
	if len(unchanged) > 0 {
		fmt.Fprintf(w, "\nUnchanged: %s\n", strings.Join(unchanged, ", "))
	}
	return nil
}

// markdownText keeps text from plans (queries, URLs) from being read as
// Markdown or breaking a table cell; line breaks are left to the caller.
var markdownText = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`,
	"<", `\<`, ">", `\>`, "|", `\|`, "#", `\#`,
).Replace

// markdownCode formats text as inline code, which Markdown shows as it is.
// A backtick inside takes a longer fence; a line break becomes a space, so
// that a list item stays one line.
func markdownCode(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if strings.Contains(s, "`") {
		return "`` " + s + " ``"
	}
	return "`" + s + "`"
}
