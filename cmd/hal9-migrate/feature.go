package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
)

func newFeatureCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "feature",
		Short: "List, enable and disable a plan's feature flags",
		Long: `A plan's feature flags (spec.features) each have a rollout percentage: the
share of users that see the flag on. The daemon publishes them for the
application as OpenFeature flagd flag definitions.

list reads the flags; enable and disable change one and commit that change
to the plan repository, like migrate: the daemon publishes the new flags once
it sees the commit.`,
		Example: `  hal9-migrate feature list
  hal9-migrate feature enable hierarchical_neurons --percentage 25
  hal9-migrate feature disable hierarchical_neurons`,
		Args: subcommandArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(newFeatureListCmd(), newFeatureEnableCmd(), newFeatureDisableCmd())
	return cmd
}

// featureList is what feature list prints with -o json or yaml.
type featureList struct {
	Plan     string        `json:"plan" yaml:"plan"`
	File     string        `json:"file" yaml:"file"`
	Branch   string        `json:"branch" yaml:"branch"`
	Features []featureFlag `json:"features" yaml:"features"`
}

type featureFlag struct {
	Name       string `json:"name" yaml:"name"`
	Percentage int    `json:"percentage" yaml:"percentage"`
}

func newFeatureListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show a plan's feature flags and their percentages",
		Long: `List shows the feature flags of a plan and their rollout percentages, as they
are on the branch (for a local clone, as committed: the working tree is not
read).`,
		Example: `  hal9-migrate feature list
  hal9-migrate feature list --repo https://git.example.com/acme/plans.git --plan hal9 -o json`,
		Args: usageArgs(cobra.NoArgs),
	}
	rf := addRepoFlags(cmd)
	format := addFormatFlag(cmd, "text", "json", "yaml")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		o := rf.options()
		o.MustExist = true
		b, p, _, err := openPlan(cmd, rf, o)
		if err != nil {
			return err
		}
		out := featureList{Plan: p.Metadata.Name, File: p.File, Branch: b.Name(), Features: []featureFlag{}}
		for _, name := range slices.Sorted(maps.Keys(p.Spec.Features)) {
			out.Features = append(out.Features, featureFlag{Name: name, Percentage: p.Spec.Features[name]})
		}
		w := cmd.OutOrStdout()
		switch format.value {
		case "json":
			return writeJSON(w, out)
		case "yaml":
			return writeYAML(w, out)
		}
		if len(out.Features) == 0 {
			_, err := fmt.Fprintf(w, "%s (%s) has no feature flags\n", out.Plan, out.File)
			return err
		}
		rows := [][]string{{"FEATURE", "PERCENTAGE"}}
		for _, f := range out.Features {
			rows = append(rows, []string{f.Name, fmt.Sprintf("%d%%", f.Percentage)})
		}
		return writeTable(w, "", rows, nil)
	}
	return cmd
}

func newFeatureEnableCmd() *cobra.Command {
	var percentage int
	cmd := &cobra.Command{
		Use:   "enable NAME [--percentage N]",
		Short: "Roll a feature flag out to a percentage of users, as a commit",
		Long: `Enable sets the rollout percentage of a feature flag in spec.features of a
plan (100 unless --percentage says otherwise), adding the flag if the plan
does not have it yet, and commits that change to the plan repository.

Where the commit goes (--repo, --branch, --push) works as for migrate.`,
		Example: `  # Show the new neurons to a quarter of the users
  hal9-migrate feature enable hierarchical_neurons --percentage 25

  # To everyone, on a pull request branch of the remote
  hal9-migrate feature enable hierarchical_neurons --repo https://git.example.com/acme/plans.git \
    --token-file ~/.config/plans-token --branch neurons-100 --yes`,
		Args: usageArgs(cobra.ExactArgs(1)),
	}
	rf := addRepoFlags(cmd)
	cf := addCommitFlags(cmd)
	cmd.Flags().IntVar(&percentage, "percentage", 100, "the `percentage` of users that see the flag on")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		return runChange(cmd, rf, cf, func(p *plan.Plan) (decision, error) {
			subject := fmt.Sprintf("feature(%s): enable %s at %d%%", p.Metadata.Name, name, percentage)
			if old, ok := p.Spec.Features[name]; ok {
				subject = fmt.Sprintf("feature(%s): %s %d%% → %d%%", p.Metadata.Name, name, old, percentage)
			}
			return decision{
				edits:    []plan.FileEdit{plan.SetFeature(name, percentage)},
				subject:  subject,
				trailers: featureTrailers(p),
			}, nil
		})
	}
	return cmd
}

func newFeatureDisableCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disable NAME",
		Short: "Turn a feature flag off for every user, as a commit",
		Long: `Disable sets the rollout percentage of a feature flag of a plan to 0 and
commits that change to the plan repository. The flag stays in the plan, so
that the application sees it off rather than unknown.

Where the commit goes (--repo, --branch, --push) works as for migrate.`,
		Example: `  hal9-migrate feature disable hierarchical_neurons`,
		Args:    usageArgs(cobra.ExactArgs(1)),
	}
	rf := addRepoFlags(cmd)
	cf := addCommitFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		return runChange(cmd, rf, cf, func(p *plan.Plan) (decision, error) {
			old, ok := p.Spec.Features[name]
			if !ok {
				flags := slices.Sorted(maps.Keys(p.Spec.Features))
				if len(flags) == 0 {
					return decision{}, fmt.Errorf("%s has no feature flags", p.Metadata.Name)
				}
				return decision{}, fmt.Errorf("%s has no feature flag %q; its flags are %s", p.Metadata.Name, name, strings.Join(flags, ", "))
			}
			return decision{
				edits:    []plan.FileEdit{plan.SetFeature(name, 0)},
				subject:  fmt.Sprintf("feature(%s): disable %s (was %d%%)", p.Metadata.Name, name, old),
				trailers: featureTrailers(p),
			}, nil
		})
	}
	return cmd
}

func featureTrailers(p *plan.Plan) map[string]string {
	return map[string]string{gitops.TrailerPlan: p.Metadata.Name, gitops.TrailerAction: "feature"}
}
