package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
)

func newMigrateCmd() *cobra.Command {
	var (
		phase      string
		percentage int
	)
	cmd := &cobra.Command{
		Use:   "migrate --phase PHASE [--percentage N]",
		Short: "Move a plan's target, as a commit",
		Long: `Migrate sets spec.target of a plan to a phase and, optionally, a percentage
of its steps (without one, the target is the phase's last step), and commits
that change to the plan repository. It never touches the workloads: the
daemon sees the commit and moves the migration there, a step at a time.

The commit holds only the plan file, edited in place: comments, order and
style are kept. The result is validated first; an invalid target is reported
and nothing is committed. Going back past a point of no return takes
'hal9-migrate rollback --to-phase PHASE --force'.

With a local clone (the default: the repository around the current
directory) the commit is made on the checked-out branch, or on --branch,
created from HEAD and checked out when it does not exist; --push then pushes
it to origin. With a URL, the commit is pushed to --branch (main by default);
a branch that does not exist is created from --from, which is how a pull
request starts.`,
		Example: `  # Advance the only plan in ./plans to canary 25%, in the local clone
  hal9-migrate migrate --phase canary --percentage 25

  # Open a pull request branch on the remote that moves hal9 to ramp-up
  hal9-migrate migrate --repo git@github.com:acme/plans.git --ssh-key ~/.ssh/id_ed25519 \
    --plan hal9 --branch hal9-ramp-up --phase ramp-up --yes`,
		Args: usageArgs(cobra.NoArgs),
	}
	rf := addRepoFlags(cmd)
	cf := addCommitFlags(cmd)
	addOpenPRFlags(cmd, cf)
	cmd.Flags().StringVar(&phase, "phase", "", "the `phase` to move the target to (required)")
	cmd.Flags().IntVar(&percentage, "percentage", 0, "the `percentage` within the phase (default: its last step)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if phase == "" {
			return &usageError{err: errors.New("--phase is required"), command: cmd.CommandPath()}
		}
		target := plan.Target{Phase: phase}
		if cmd.Flags().Changed("percentage") {
			target.Percentage = &percentage
		}
		return runChange(cmd, rf, cf, func(p *plan.Plan) (decision, error) {
			from, to := p.TargetPosition(), p.Resolve(target)
			d := decision{
				edits:    []plan.FileEdit{plan.SetTarget(target)},
				subject:  fmt.Sprintf("migrate(%s): %s → %s", p.Metadata.Name, from, to),
				trailers: moveTrailers(p, "migrate", from, to),
			}
			if s, ok := p.PointOfNoReturn(from, to); ok {
				d.refusal = fmt.Errorf("refusing to move the target of %s back from %s to %s: that goes back past %s, a point of no return; 'hal9-migrate rollback --to-phase %s --force' does that deliberately",
					p.Metadata.Name, from, to, s.Position, phase)
			}
			return d, nil
		})
	}
	return cmd
}

// moveTrailers are the trailers of a commit that moves a plan's target.
func moveTrailers(p *plan.Plan, action string, from, to plan.Position) map[string]string {
	return map[string]string{
		gitops.TrailerPlan:   p.Metadata.Name,
		gitops.TrailerAction: action,
		gitops.TrailerFrom:   from.String(),
		gitops.TrailerTo:     to.String(),
	}
}
