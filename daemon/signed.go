package daemon

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
)

// gate decides, in signed mode, what to follow of head, a plan read at a
// head whose commits are not all signed by a trusted key, given prev, the
// version followed so far (ok false: none). Every change to a plan needs a
// signature except lowering its target, so that a rollback never waits:
//   - head changes nothing but lower (or keep) the target: it is followed;
//   - head changes anything else, or raises the target: prev is followed,
//     with head's target when that is lower;
//   - there is no prev (a new plan): nothing is followed.
//
// The condition, when not nil, says what was kept back and names commit,
// the commit that changed the plan.
func (d *Daemon) gate(head, prev followed, ok bool, snap gitops.Snapshot, commit gitops.Hash) (*followed, *Condition) {
	p := head.plan
	why := snap.SignatureProblem
	if why == "" {
		why = "no signature checked"
	}
	cond := func(change, outcome string) *Condition {
		return &Condition{Type: "ChangeNotSigned", Commit: string(commit),
			Message: fmt.Sprintf("commit %s %s without a trusted signature (%s); %s", shorthash.Of(string(commit)), change, why, outcome)}
	}
	if !ok {
		return nil, cond("adds plan "+p.Metadata.Name, "it is not followed")
	}
	old := prev.plan
	changed := changedFields(old, p)
	lower, sameTarget := false, p.Spec.Target == old.Spec.Target || targetsEqual(p.Spec.Target, old.Spec.Target)
	if !sameTarget && old.PhaseIndex(p.Spec.Target.Phase) >= 0 {
		lower = old.Compare(old.Resolve(p.Spec.Target), old.TargetPosition()) < 0
	}
	switch {
	case len(changed) == 0 && (sameTarget || lower):
		return &head, nil
	case len(changed) == 0:
		return &prev, cond("moves the target forward to "+p.TargetPosition().String(), "keeping "+old.TargetPosition().String())
	}
	what := "changes " + listFields(changed)
	if !lower {
		return &prev, cond(what, "following the last signed version")
	}
	// The rest waits for a signature; the lowered target does not.
	q := *old
	q.Spec.Target = p.Spec.Target
	kept := followed{plan: &q, data: prev.data, target: q.TargetPosition().String(), blob: prev.blob}
	return &kept, cond(what, "following the last signed version, with the lowered target "+q.TargetPosition().String())
}

func targetsEqual(a, b plan.Target) bool {
	if a.Phase != b.Phase {
		return false
	}
	if a.Percentage == nil || b.Percentage == nil {
		return a.Percentage == b.Percentage
	}
	return *a.Percentage == *b.Percentage
}

// changedFields lists the fields in which b differs from a, but for
// spec.target, as paths ("spec.guardrails.0.max").
func changedFields(a, b *plan.Plan) []string {
	fa, fb := flatten(withoutTarget(a)), flatten(withoutTarget(b))
	var out []string
	for k, v := range fa {
		if w, ok := fb[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func withoutTarget(p *plan.Plan) any {
	q := *p
	q.Spec.Target = plan.Target{}
	b, err := json.Marshal(q)
	if err != nil {
		return nil
	}
	var v any
	_ = json.Unmarshal(b, &v)
	return v
}

// flatten maps every leaf of v to its path.
func flatten(v any) map[string]string {
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		join := func(k string) string {
			if path == "" {
				return k
			}
			return path + "." + k
		}
		switch x := v.(type) {
		case map[string]any:
			if len(x) == 0 {
				out[path] = "{}"
			}
			for _, k := range slices.Sorted(maps.Keys(x)) {
				walk(join(k), x[k])
			}
		case []any:
			if len(x) == 0 {
				out[path] = "[]"
			}
			for i, e := range x {
				walk(join(strconv.Itoa(i)), e)
			}
		default:
			b, _ := json.Marshal(x)
			out[path] = string(b)
		}
	}
	walk("", v)
	return out
}

// listFields writes a few field paths, and how many more there are.
func listFields(fields []string) string {
	const shown = 5
	if len(fields) <= shown {
		return strings.Join(fields, ", ")
	}
	return fmt.Sprintf("%s and %d more fields", strings.Join(fields[:shown], ", "), len(fields)-shown)
}
