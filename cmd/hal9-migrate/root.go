package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3". Without it the module version recorded
// by `go install` is used.
var version string

// buildVersion returns the version this binary reports.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func newRootCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hal9-migrate",
		Short: "Migrate a running service to a new implementation in safe, observable phases",
		Long: `hal9-migrate moves a running service from an old implementation (stable) to a
new one (candidate) in phases, the GitOps way: the desired position of every
migration lives in a Git repository as a plan file, and a daemon makes the
world match it.`,
		Example: `  # Check the plans in ./plans, as CI does
  hal9-migrate plan vet

  # Show the timeline a plan follows
  hal9-migrate plan explain plans/hal9-hierarchical.yaml

  # Show what the uncommitted changes to ./plans will do
  hal9-migrate plan diff

  # Move the target of the plan to canary 25%: a commit the daemon acts on
  hal9-migrate migrate --phase canary --percentage 25`,
		Version:       buildVersion(),
		Args:          subcommandArgs,
		RunE:          runGroup,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	cmd.SetVersionTemplate("hal9-migrate {{.Version}}\n")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{err: err, command: c.CommandPath()}
	})

	cmd.AddCommand(newPlanCmd(), newMigrateCmd(), newRollbackCmd(), newFeatureCmd(), newStatusCmd(), newMonitorCmd(), newStateCmd(), newPreCheckCmd(), newVerifyCmd(), newDaemonCmd())

	// Create cobra's help and completion commands now rather than when the
	// command runs, so that they get examples like every other command.
	cmd.InitDefaultHelpCmd()
	cmd.InitDefaultCompletionCmd()
	for _, c := range cmd.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  hal9-migrate help plan vet"
		case "completion":
			c.Example = `  # Load completions into the current bash session
  source <(hal9-migrate completion bash)`
			for _, shell := range c.Commands() {
				shell.Example = "  hal9-migrate completion " + shell.Name() + " > hal9-migrate." + shell.Name()
			}
		}
	}
	return cmd
}

// subcommandArgs rejects arguments to a command that only groups others:
// they can only be a mistyped subcommand.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return &usageError{err: fmt.Errorf("%s", msg), command: cmd.CommandPath()}
}

// runGroup shows the help of a command that only groups others.
func runGroup(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// usageArgs marks the errors of an argument check as usage errors.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err: err, command: cmd.CommandPath()}
		}
		return nil
	}
}
