package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/plan"
)

// formatFlag is the value of an -o/--format flag: one of a fixed list, so
// that a wrong value is a usage error when the flags are parsed.
type formatFlag struct {
	value   string
	allowed []string
}

func (f *formatFlag) String() string { return f.value }
func (f *formatFlag) Type() string   { return "string" }

func (f *formatFlag) Set(s string) error {
	if !slices.Contains(f.allowed, s) {
		return fmt.Errorf("must be one of %s", strings.Join(f.allowed, ", "))
	}
	f.value = s
	return nil
}

// addFormatFlag adds -o/--format to cmd; the first allowed value is the
// default.
func addFormatFlag(cmd *cobra.Command, allowed ...string) *formatFlag {
	f := &formatFlag{value: allowed[0], allowed: allowed}
	usage := "output format: " + strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	cmd.Flags().VarP(f, "format", "o", usage)
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(allowed, cobra.ShellCompDirectiveNoFileComp))
	return f
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func writeYAML(w io.Writer, v any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

// printErrors writes plan errors one per line, as file:line:col: path:
// message.
func printErrors(w io.Writer, errs plan.Errors) {
	for _, e := range errs {
		fmt.Fprintln(w, e.Error())
	}
}

// long formats a duration that may span days both ways: "96h (4d)",
// "36h (1d12h)". Soaks are written in hours in plans; days are easier to
// plan a calendar with.
func long(d plan.Duration) string {
	const day = 24 * time.Hour
	s := d.String()
	if d.Std() <= day {
		return s
	}
	s += fmt.Sprintf(" (%dd", d.Std()/day)
	if rest := d.Std() % day; rest != 0 {
		s += plan.FormatDuration(rest)
	}
	return s + ")"
}

// plural returns "1 error", "2 errors".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// stepActions says what the daemon does on entering a step and what must
// hold before it leaves it, in short phrases.
func stepActions(s plan.Step, guardrails bool) (enter, leave []string) {
	if s.Checkpoint != "" {
		enter = append(enter, "checkpoint "+s.Checkpoint)
	}
	if s.Run != nil {
		run := "run " + s.Run.Image
		if s.Run.Timeout > 0 {
			run += " (timeout " + s.Run.Timeout.String() + ")"
		}
		enter = append(enter, run)
		leave = append(leave, "job succeeds")
	}
	if s.Decommission != nil {
		enter = append(enter, "scale stable to 0 after "+s.Decommission.String())
	}
	if guardrails && s.Soak > 0 {
		leave = append(leave, "guardrails green")
	}
	if len(s.Verify) > 0 {
		leave = append(leave, "verify "+strings.Join(s.Verify, ", "))
	}
	return enter, leave
}

// orDash returns the phrases one per line, or "-" when there are none.
func orDash(parts []string) string {
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "\n")
}

// writeEach writes items in format: as JSON or YAML, one document (the item
// itself when there is one, else the list), or as text, with text for each
// item and a blank line between them.
func writeEach[T any](w io.Writer, format string, items []T, text func(io.Writer, T) error) error {
	var data any = items
	if len(items) == 1 {
		data = items[0]
	}
	switch format {
	case "json":
		return writeJSON(w, data)
	case "yaml":
		return writeYAML(w, data)
	}
	for i, item := range items {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := text(w, item); err != nil {
			return err
		}
	}
	return nil
}
