package drivers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hal9ai/hal9-migrate/plan"
)

// Select returns an Opener that opens each plan with the opener named after
// its driver block ("docker", "kubernetes"). A plan naming a driver that is
// not configured is an error that says which ones are, never a fallback to
// another driver.
func Select(openers map[string]Opener) Opener {
	names := make([]string, 0, len(openers))
	for n := range openers {
		names = append(names, n)
	}
	slices.Sort(names)
	return func(ctx context.Context, p *plan.Plan) (Driver, error) {
		name := p.Spec.Driver.Name()
		open, ok := openers[name]
		if !ok || open == nil {
			configured := "none is"
			if len(names) > 0 {
				configured = strings.Join(names, ", ")
				if len(names) == 1 {
					configured += " is"
				} else {
					configured += " are"
				}
			}
			return nil, fmt.Errorf("plan %s uses the %q driver, which this daemon is not configured for (%s configured)", p.Metadata.Name, name, configured)
		}
		return open(ctx, p)
	}
}
