package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
)

// known names the schema's regular expressions, so that messages say "a Go
// duration" rather than print the expression.
var known = map[string]string{
	`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`:                              "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters",
	`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`:                     "a Go duration such as 90s, 5m or 24h",
	`^[A-Za-z][A-Za-z0-9_.-]*$`:                                         "a flag name of letters, digits, '_', '.' and '-'",
	`^[A-Za-z_][A-Za-z0-9_]*$`:                                          "an environment variable name",
	`^https?://[^\s]+$`:                                                 "an http:// or https:// URL",
	`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`: "a DNS-1123 subdomain (DNS labels joined by dots)",
	`^.{1,253}$`:                "at most 253 characters",
	`^[0-9]+(\.[0-9]+)?%$`:      "a percentage such as \"20%\"",
	`^[A-Za-z0-9_.:/-]{1,253}$`: "a label value of letters, digits, '_', '.', ':', '/' and '-'",
}

// describe says in words what a schema value accepts.
func describe(v cue.Value) string {
	if text := fmt.Sprint(v); strings.HasPrefix(text, "=~") {
		if re, err := strconv.Unquote(text[2:]); err == nil {
			if d, ok := known[re]; ok {
				return d
			}
		}
	}
	op, args := v.Expr()
	if op == cue.SelectorOp {
		if d := cue.Dereference(v); d != v {
			op, args = d.Expr()
		}
	}
	switch op {
	case cue.OrOp:
		parts := make([]string, 0, len(args))
		for _, a := range args {
			if d := describe(a); d != "" {
				parts = append(parts, d)
			}
		}
		return joinOr(parts)
	case cue.AndOp:
		var kinds, bounds []string
		for _, a := range flattenAnd(args) {
			aop, aargs := a.Expr()
			switch aop {
			case cue.GreaterThanEqualOp, cue.GreaterThanOp, cue.LessThanEqualOp, cue.LessThanOp, cue.NotEqualOp:
				bounds = append(bounds, bound(aop, aargs))
			default:
				if d := describe(a); d != "" && !slices.Contains(kinds, d) {
					kinds = append(kinds, d)
				}
			}
		}
		if len(kinds) == 1 && kinds[0] == "a string" && len(bounds) == 1 && bounds[0] == "not empty" {
			return "a non-empty string"
		}
		sep := " "
		if len(kinds) > 0 && strings.ContainsAny(strings.Join(kinds, ""), ":,") {
			sep = ", " // "a DNS-1123 label: ..., not "start""
		}
		return strings.TrimSpace(strings.Join(kinds, " and ") + sep + strings.Join(bounds, " and "))
	case cue.RegexMatchOp:
		if len(args) == 1 {
			re, _ := args[0].String()
			if d, ok := known[re]; ok {
				return d
			}
			return fmt.Sprintf("a string matching %q", re)
		}
	case cue.GreaterThanEqualOp, cue.GreaterThanOp, cue.LessThanEqualOp, cue.LessThanOp, cue.NotEqualOp:
		return bound(op, args)
	}
	if v.Err() == nil && v.IsConcrete() && v.Kind() != cue.StructKind && v.Kind() != cue.ListKind {
		return fmt.Sprint(v)
	}
	switch v.IncompleteKind() {
	case cue.StringKind:
		return "a string"
	case cue.IntKind:
		return "an integer"
	case cue.FloatKind, cue.NumberKind:
		return "a number"
	case cue.BoolKind:
		return "true or false"
	case cue.StructKind:
		return "a mapping"
	case cue.ListKind:
		return "a list"
	}
	return ""
}

// flattenAnd lists the conjuncts of nested AndOps.
func flattenAnd(args []cue.Value) []cue.Value {
	var out []cue.Value
	for _, a := range args {
		if op, sub := a.Expr(); op == cue.AndOp {
			out = append(out, flattenAnd(sub)...)
		} else {
			out = append(out, a)
		}
	}
	return out
}

func bound(op cue.Op, args []cue.Value) string {
	if len(args) != 1 {
		return ""
	}
	a := fmt.Sprint(args[0])
	switch op {
	case cue.GreaterThanEqualOp:
		return ">= " + a
	case cue.GreaterThanOp:
		return "> " + a
	case cue.LessThanEqualOp:
		return "<= " + a
	case cue.LessThanOp:
		return "< " + a
	case cue.NotEqualOp:
		if a == `""` {
			return "not empty"
		}
		return "not " + a
	}
	return ""
}

func joinOr(parts []string) string {
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}

// closest returns the candidate nearest to name by edit distance, if it is
// near enough to be a likely typo.
func closest(name string, candidates []string) string {
	best, bestDist := "", len(name)/2+1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(name), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
