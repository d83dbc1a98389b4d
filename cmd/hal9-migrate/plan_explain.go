package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/plan"
)

func newPlanExplainCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "explain PATH",
		Short: "Show the timeline a plan follows",
		Long: `Explain shows, for each plan in PATH (a file or a directory), the steps the
daemon takes from the start: the traffic and mirror at each step, how long it
soaks, what happens on entering it (checkpoint, job), what must pass before it
is left (checks, guardrails) and what a guardrail breach there does. A line
marks the target; the steps after it wait for a commit that moves the target.

Below the table come the least time to reach the target and to run the whole
plan (soaks only: jobs can take up to their timeouts more) and the guardrails.`,
		Example: `  hal9-migrate plan explain plans/hal9-hierarchical.yaml

  # One plan of a directory, as JSON
  hal9-migrate plan explain plans --plan hal9-hierarchical -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("expected one PATH, a plan file or a directory, got %d arguments", len(args)), command: cmd.CommandPath()}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "plan", "", "explain only the plan with this `name`")
	format := addFormatFlag(cmd, "text", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return runExplain(cmd.OutOrStdout(), cmd.ErrOrStderr(), format.value, args[0], name)
	}
	return cmd
}

func runExplain(stdout, stderr io.Writer, format, path, name string) error {
	plans, err := loadPlans(stderr, path, name)
	if err != nil {
		return err
	}
	siblings := plans
	if name != "" || len(plans) == 1 {
		siblings = siblingPlans(path, plans)
	}
	explained := make([]plan.Explanation, len(plans))
	for i, p := range plans {
		explained[i] = plan.ExplainAmong(p, siblings)
	}

	return writeEach(stdout, format, explained, writeExplanation)
}

// siblingPlans returns the plans a group's members are looked for among:
// those of path when it is a directory, else the valid plans of the
// file's directory (quietly: only the file explained must be valid).
func siblingPlans(path string, plans []*plan.Plan) []*plan.Plan {
	if fi, err := os.Stat(path); err != nil || fi.IsDir() {
		all, err := loadPlans(io.Discard, path, "")
		if err != nil {
			return plans
		}
		return all
	}
	grouped := false
	for _, p := range plans {
		grouped = grouped || p.Spec.Group != ""
	}
	if !grouped {
		return plans
	}
	v, err := plan.NewValidator()
	if err != nil {
		return plans
	}
	set, _ := v.Load(filepath.Dir(path))
	return append(slices.Clone(plans), set.Plans...)
}

// loadPlans loads the plans in path, or only the one named name when it is
// not empty; when any is invalid it prints the errors to stderr and fails,
// since half a directory explains nothing well.
func loadPlans(stderr io.Writer, path, name string) ([]*plan.Plan, error) {
	v, err := plan.NewValidator()
	if err != nil {
		return nil, err
	}
	set, _ := v.Load(path)
	if len(set.Errors) > 0 {
		printErrors(stderr, set.Errors)
		fmt.Fprintf(stderr, "%s in %s\n", plural(len(set.Errors), "error"), path)
		return nil, errReported
	}
	if len(set.Plans) == 0 {
		return nil, fmt.Errorf("no plans in %s", path)
	}
	if name == "" {
		return set.Plans, nil
	}
	names := make([]string, len(set.Plans))
	for i, p := range set.Plans {
		if p.Metadata.Name == name {
			return []*plan.Plan{p}, nil
		}
		names[i] = p.Metadata.Name
	}
	return nil, fmt.Errorf("no plan named %q in %s (plans: %s)", name, path, strings.Join(names, ", "))
}

// writeExplanation writes one plan's timeline as a table, the target marked
// by a rule across it, then the least times and the guardrails.
func writeExplanation(w io.Writer, e plan.Explanation) error {
	fmt.Fprintf(w, "%s (%s)\n", e.Plan, e.File)
	fmt.Fprintf(w, "%s driver, target %s\n\n", e.Driver, e.Target)

	var rows [][]string
	rules := map[int]string{} // row index → rule drawn there
	rows = append(rows, []string{"STEP", "PHASE", "TRAFFIC", "MIRROR", "SOAK", "ON ENTERING", "BEFORE LEAVING", "ON BREACH"})
	for i, s := range e.Steps {
		last := i == len(e.Steps)-1
		// The last step is never left: only its checks still matter.
		enter, leave := stepActions(s.Step, len(e.Guardrails) > 0 && !last)
		if last {
			leave = append(leave, "(end of plan)")
		}
		mirror := "-"
		if s.Mirror > 0 {
			mirror = fmt.Sprintf("%d%%", s.Mirror)
		}
		soak := "-"
		if s.Soak > 0 {
			soak = s.Soak.String()
		}
		rows = append(rows, []string{
			fmt.Sprint(s.Index + 1), s.Phase, fmt.Sprintf("%d%%", s.Percentage), mirror, soak,
			orDash(enter), orDash(leave), s.OnBreach.String(),
		})
		if s.Irreversible {
			rules[len(rows)] = "point of no return: past it a breach freezes instead of rolling back"
			rows = append(rows, nil)
		}
		if !s.BeyondTarget && (i == len(e.Steps)-1 || e.Steps[i+1].BeyondTarget) {
			rule := "target: " + e.Target.String()
			if i < len(e.Steps)-1 {
				rule += " (the steps below wait for a commit that moves the target)"
			}
			rules[len(rows)] = rule
			rows = append(rows, nil)
		}
	}
	if err := writeTable(w, "", rows, rules); err != nil {
		return err
	}

	fmt.Fprintln(w)
	toTarget := long(e.ToTarget)
	if e.ToTargetJobTimeouts > 0 {
		toTarget += ", plus up to " + long(e.ToTargetJobTimeouts) + " of jobs"
	}
	fmt.Fprintf(w, "Least time to the target:   %s\n", toTarget)
	total := long(e.Total)
	if e.JobTimeouts > 0 {
		total += ", plus up to " + long(e.JobTimeouts) + " of jobs"
	}
	fmt.Fprintf(w, "Least time for the plan:    %s\n", total)
	fmt.Fprintf(w, "Promotion:                  %s\n", e.DescribePromotion())
	writeRelations(w, e)
	if len(e.Guardrails) == 0 {
		fmt.Fprintln(w, "Guardrails:                 none (nothing triggers a rollback)")
		return nil
	}
	fmt.Fprintln(w, "Guardrails:")
	for _, g := range e.Guardrails {
		fmt.Fprintf(w, "  %s\n", g)
	}
	fmt.Fprintln(w, "  Each is judged on readings taken where the migration stands: after every move its `for`\n"+
		"  and failures start again, so a fault that persists rolls back one step per window.")
	return nil
}

// writeRelations says what ties the plan to others: its lockstep group,
// with how the members line up when they are known, and its gates.
func writeRelations(w io.Writer, e plan.Explanation) {
	if e.Group != "" {
		if len(e.Members) < 2 {
			fmt.Fprintf(w, "Group:                      member of group %s (no other member in this directory)\n", e.Group)
		} else {
			others := slices.DeleteFunc(slices.Clone(e.Members), func(m string) bool { return m == e.Plan })
			fmt.Fprintf(w, "Group:                      %s, in lockstep with %s\n", e.Group, strings.Join(others, ", "))
		}
		fmt.Fprintln(w, "  Every member reaches a step before any goes on; a breach in any member rolls every member\n"+
			"  back, in one commit naming the member.")
		if e.Lockstep != nil {
			fmt.Fprintln(w, "  The group's steps:")
			for _, l := range strings.Split(strings.TrimSuffix(e.Lockstep.String(), "\n"), "\n") {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	if len(e.Gates) == 0 {
		return
	}
	fmt.Fprintln(w, "Gates:")
	for _, g := range e.Gates {
		fmt.Fprintf(w, "  %s\n", describeGate(g))
	}
}

// describeGate says when a gate holds the migration and what it waits for:
// "waits before leaving start for checkout-staging at full for 1h".
func describeGate(g plan.PlanGate) string {
	if g.Phase == "" {
		return "waits before leaving start for " + g.Gate.String()
	}
	return "before " + g.Phase + ": waits for " + g.Gate.String()
}

// writeTable aligns rows in columns, each line indented by indent. A cell
// may hold several lines. A nil row is drawn as a rule across the table's
// width, labelled with rules[index of the row].
func writeTable(w io.Writer, indent string, rows [][]string, rules map[int]string) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	cols := len(rows[0])
	ruleAt := map[int]string{} // output line → rule label
	line := 0
	for i, row := range rows {
		if row == nil {
			// Empty cells keep the columns of the rows around the rule
			// in one block.
			fmt.Fprintln(tw, strings.Repeat("\t", cols-1))
			ruleAt[line] = rules[i]
			line++
			continue
		}
		cells := make([][]string, len(row))
		height := 1
		for j, c := range row {
			cells[j] = strings.Split(c, "\n")
			height = max(height, len(cells[j]))
		}
		for k := range height {
			parts := make([]string, len(cells))
			for j, c := range cells {
				if k < len(c) {
					parts[j] = c[k]
				}
			}
			fmt.Fprintln(tw, indent+strings.Join(parts, "\t"))
			line++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	width := 0
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
		width = max(width, utf8.RuneCountInString(lines[i]))
	}
	for at, label := range ruleAt {
		rule := indent + "── " + label + " "
		lines[at] = rule + strings.Repeat("─", max(width-utf8.RuneCountInString(rule), 2))
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}
