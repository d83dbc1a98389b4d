package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hal9ai/hal9-migrate/plan"
)

func newRollbackCmd() *cobra.Command {
	var (
		toPhase string
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "rollback [--to-phase PHASE] [--force]",
		Short: "Move a plan's target back, as a commit",
		Long: `Rollback moves spec.target of a plan back and commits that change to the
plan repository: to the step before the current target in the plan's
timeline, or with --to-phase to the last step of an earlier phase. The daemon
sees the commit and moves traffic straight there, without soaking on the way
down. (Reverting the commit that advanced the target also moves it back, to
wherever that commit moved it from, which may be more than one step.)

Going back past a point of no return (the end of an irreversible phase, such
as a state migration, at or before the current target) is refused unless
--force is given: once that phase has completed, going back means restoring
the checkpoint taken before it. With --force the commit also sets the
annotation migrate.hal9.ai/force-rollback to the new target, recording that
the move is deliberate.

Where the commit goes (--repo, --branch, --push) works as for migrate.`,
		Example: `  # Back to the previous step of the only plan in ./plans
  hal9-migrate rollback

  # Back to canary, past the state migration, and push
  hal9-migrate rollback --plan hal9 --to-phase canary --force --push`,
		Args: usageArgs(cobra.NoArgs),
	}
	rf := addRepoFlags(cmd)
	cf := addCommitFlags(cmd)
	addOpenPRFlags(cmd, cf)
	cmd.Flags().StringVar(&toPhase, "to-phase", "", "roll back to the last step of this `phase` (default: the step before the target)")
	cmd.Flags().BoolVar(&force, "force", false, "go back past a point of no return")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runChange(cmd, rf, cf, func(p *plan.Plan) (decision, error) {
			return rollback(p, toPhase, force)
		})
	}
	return cmd
}

// rollback decides where rollback moves the target of p: to the step
// before it, or to the last step of phase toPhase.
func rollback(p *plan.Plan, toPhase string, force bool) (decision, error) {
	name := p.Metadata.Name
	from := p.TargetPosition()
	var target plan.Target
	if toPhase == "" {
		prev, ok := p.StepBefore(from)
		if !ok {
			return decision{}, fmt.Errorf("the target of %s, %s, is the first step of the plan: there is no step before it", name, from)
		}
		target = p.TargetFor(prev.Position)
	} else {
		if p.PhaseIndex(toPhase) < 0 {
			var names []string
			for _, ph := range p.Spec.Phases {
				names = append(names, ph.Name)
			}
			return decision{}, fmt.Errorf("%s has no phase %q; its phases are %s", name, toPhase, strings.Join(names, ", "))
		}
		target.Phase = toPhase
	}
	to := p.Resolve(target)
	if p.Compare(to, from) >= 0 {
		return decision{}, fmt.Errorf("phase %s ends at %s, which is not before the target of %s, %s: rollback only moves the target back (migrate moves it anywhere)", toPhase, to, name, from)
	}

	d := decision{
		edits:    []plan.FileEdit{plan.SetTarget(target)},
		subject:  fmt.Sprintf("rollback(%s): %s → %s", name, from, to),
		trailers: moveTrailers(p, "rollback", from, to),
	}
	s, ok := p.PointOfNoReturn(from, to)
	if !ok {
		return d, nil
	}
	ph := p.Spec.Phases[p.PhaseIndex(s.Phase)]
	undo := "what it did is not undone by moving traffic back"
	if ph.Checkpoint != "" {
		undo = "going back means restoring checkpoint " + ph.Checkpoint
	}
	if !force {
		return decision{}, fmt.Errorf("refusing to roll back %s from %s to %s: that goes back past %s, a point of no return (phase %s is irreversible; once it has completed, %s); run again with --force if you mean it",
			name, from, to, s.Position, s.Phase, undo)
	}
	d.edits = append(d.edits, plan.SetAnnotation(plan.ForceRollbackAnnotation, to.String()))
	d.subject += " (forced)"
	d.body = fmt.Sprintf("This goes back past %s, a point of no return: phase %s is irreversible, and once it has completed, %s. The annotation %s records that the move is deliberate.",
		s.Position, s.Phase, undo, plan.ForceRollbackAnnotation)
	return d, nil
}
