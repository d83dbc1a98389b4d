package main

import "github.com/spf13/cobra"

func newPlanCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Check, explain and compare plan files",
		Long: `Plan files describe a migration: its phases, guardrails and target. These
commands read them from the working tree (and, for diff, from Git) and never
change anything.`,
		Example: `  hal9-migrate plan vet plans
  hal9-migrate plan explain plans/hal9-hierarchical.yaml
  hal9-migrate plan diff --base origin/main`,
		Args: subcommandArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(newPlanVetCmd(), newPlanExplainCmd(), newPlanDiffCmd())
	cmd.AddCommand(newPlanBacktestCmd())
	return cmd
}
