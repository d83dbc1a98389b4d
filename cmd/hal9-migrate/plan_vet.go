package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/plan"
)

func newPlanVetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vet [PATH...]",
		Short: "Validate plan files",
		Long: `Vet validates plan files against the schema and the rules that relate their
fields, and reports every error of every file as file:line:col: path: message.

Each PATH is a plan file or a directory, walked for .yaml, .yml, .json and
.cue files (hidden directories are skipped, and files found there whose kind
is not MigrationPlan are ignored). The default PATH is plans.

Every file is read within limits, the same as the daemon's (the plans:
section of its configuration, whose key each flag names): a file over one is
an error that names it. Plans that need CUE (CUE plans, and invalid ones) are
evaluated in a separate process that is stopped at the time and memory
limits.

Errors go to standard output, one per line (or as JSON, or as GitHub Actions
annotations); a summary goes to standard error. The exit status is 0 when
every plan is valid, 1 when any is not, and 2 for a usage error.`,
		Example: `  # Vet the plans folder
  hal9-migrate plan vet

  # Vet two files, with a JSON report
  hal9-migrate plan vet -o json plans/a.yaml plans/b.cue

  # In a GitHub Actions step: errors become annotations on the pull request
  hal9-migrate plan vet --format github plans

  # Allow larger plan files than the daemon's default
  hal9-migrate plan vet --max-file-size 4MiB plans`,
		Args: cobra.ArbitraryArgs,
	}
	format := addFormatFlag(cmd, "text", "json", "github")
	limits := addLimitFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := limits.Check(); err != nil {
			return &usageError{err: err, command: cmd.CommandPath()}
		}
		if len(args) == 0 {
			args = []string{"plans"}
		}
		return runVet(cmd.OutOrStdout(), cmd.ErrOrStderr(), format.value, *limits, args)
	}
	return cmd
}

// addLimitFlags adds a flag for each of the loader's limits, with the
// daemon's defaults, and names the configuration key of each.
func addLimitFlags(cmd *cobra.Command) *plan.Limits {
	l := plan.DefaultLimits()
	f := cmd.Flags()
	f.TextVar(&l.MaxFileSize, "max-file-size", l.MaxFileSize, "refuse a plan file larger than `SIZE` (plans.maxFileSize)")
	f.TextVar(&l.MaxTotalSize, "max-total-size", l.MaxTotalSize, "refuse the files past `SIZE` of plans in all, in path order (plans.maxTotalSize)")
	f.IntVar(&l.MaxNodes, "max-yaml-nodes", l.MaxNodes, "refuse a YAML file that expands to more than `N` values (plans.maxNodes)")
	f.DurationVar(&l.CUETimeout, "cue-timeout", l.CUETimeout, "stop CUE's evaluation of a plan after `DURATION` (plans.cueTimeout)")
	f.TextVar(&l.CUEMemory, "cue-memory", l.CUEMemory, "stop CUE's evaluation of a plan past `SIZE` of memory (plans.cueMemory)")
	return &l
}

func runVet(stdout, stderr io.Writer, format string, limits plan.Limits, paths []string) error {
	// Vet is a short batch process with a small live heap: collecting
	// garbage less often doubles its speed. GOGC, when set, still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(400)
	}
	v, err := plan.NewValidator(plan.WithLimits(limits))
	if err != nil {
		return err
	}
	set, _ := v.Load(paths...)
	v.Close()
	set.RequireKnown()

	switch format {
	case "json":
		errs := set.Errors
		if errs == nil {
			errs = plan.Errors{}
		}
		err = writeJSON(stdout, struct {
			Files  int         `json:"files"`
			Plans  int         `json:"plans"`
			Valid  bool        `json:"valid"`
			Errors plan.Errors `json:"errors"`
		}{set.Files, len(set.Plans), len(errs) == 0, errs})
	case "github":
		for _, e := range set.Errors {
			fmt.Fprintln(stdout, githubAnnotation(e))
		}
		vetSummary(stderr, set, paths)
	default:
		printErrors(stdout, set.Errors)
		vetSummary(stderr, set, paths)
	}
	if err != nil {
		return err
	}
	if len(set.Errors) > 0 {
		return errReported
	}
	return nil
}

// vetSummary says on stderr how many errors were found in how many files,
// or that all plans are valid.
func vetSummary(w io.Writer, set *plan.Set, paths []string) {
	if len(set.Errors) == 0 {
		if set.Files == 0 {
			fmt.Fprintf(w, "no plan files in %s\n", strings.Join(paths, ", "))
			return
		}
		fmt.Fprintf(w, "ok: %s in %s\n", plural(len(set.Plans), "plan"), plural(set.Files, "file"))
		groups := plan.Groups(set.Plans)
		for _, name := range slices.Sorted(maps.Keys(groups)) {
			ls, _ := plan.LineUp(name, groups[name])
			fmt.Fprintf(w, "group %s: %s line up in %s\n", name, strings.Join(ls.Members, ", "), plural(len(ls.Steps), "step"))
		}
		return
	}
	bad := map[string]bool{}
	for _, e := range set.Errors {
		bad[e.File] = true
	}
	// Files counts the files that were read; a path that could not be read
	// at all has an error but is not among them.
	if total := set.Files; len(bad) < total {
		fmt.Fprintf(w, "%s in %d of %s\n", plural(len(set.Errors), "error"), len(bad), plural(total, "file"))
	} else {
		fmt.Fprintf(w, "%s in %s\n", plural(len(set.Errors), "error"), plural(len(bad), "file"))
	}
}

// githubAnnotation formats e as a GitHub Actions workflow command, which
// shows the error on the pull request's changed lines.
func githubAnnotation(e plan.Error) string {
	props := []string{"file=" + escapeProperty(e.File)}
	if e.Line > 0 {
		props = append(props, "line="+strconv.Itoa(e.Line), "col="+strconv.Itoa(e.Column))
	}
	props = append(props, "title="+escapeProperty("hal9-migrate plan vet"))
	msg := e.Message
	if e.Path != "" {
		msg = e.Path + ": " + msg
	}
	return "::error " + strings.Join(props, ",") + "::" + escapeData(msg)
}

// escapeData escapes the message of a workflow command, as the Actions
// toolkit does.
var escapeData = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace

// escapeProperty escapes a property value of a workflow command, which
// additionally cannot hold the separators ':' and ','.
var escapeProperty = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace
