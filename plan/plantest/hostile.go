package plantest

import (
	"fmt"
	"strings"
)

// The files below are hostile: small to write and ruinous to read without
// the loader's limits. Tests of those limits generate them, rather than
// commit them, so that their sizes are parameters.

// header is a plan's envelope, as YAML, up to its spec.
func header(name, kind string) string {
	return fmt.Sprintf("apiVersion: migrate.hal9.ai/v1\nkind: %s\nmetadata: {name: %s}\n", kind, name)
}

// AliasBomb returns a YAML plan of kind kind (MigrationPlan, or another to
// check that it is judged before anything is expanded) whose spec.features
// is levels nested anchors of width aliases each: width^levels strings once
// expanded, "a billion laughs" at 9 levels of 10.
func AliasBomb(kind string, levels, width int) []byte {
	var b strings.Builder
	b.WriteString(header("bomb", kind))
	b.WriteString("x:\n")
	prev := "lol"
	for i := range levels {
		fmt.Fprintf(&b, "  - &a%d [", i)
		for j := range width {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString(prev)
		}
		b.WriteString("]\n")
		prev = fmt.Sprintf("*a%d", i)
	}
	fmt.Fprintf(&b, "spec:\n  features: %s\n", prev)
	return []byte(b.String())
}

// MergeBomb returns a YAML plan whose spec.features merges, at each of
// levels, width copies of the mapping of the level before: the result is a
// mapping of width keys, but making it merges width^levels mappings.
func MergeBomb(levels, width int) []byte {
	var b strings.Builder
	b.WriteString(header("merge", "MigrationPlan"))
	b.WriteString("x:\n  - &m0 {")
	for j := range width {
		if j > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "f%d: 1", j)
	}
	b.WriteString("}\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "  - &m%d {<<: [", i)
		for j := range width {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*m%d", i-1)
		}
		b.WriteString("]}\n")
	}
	fmt.Fprintf(&b, "spec:\n  features: *m%d\n", levels)
	return []byte(b.String())
}

// CUELoop returns a CUE plan whose phases come from a comprehension nested
// levels deep over list.Range(0, n, 1): n^levels phases, which CUE would
// evaluate for hours.
func CUELoop(levels, n int) []byte {
	var b strings.Builder
	b.WriteString("import \"list\"\n\napiVersion: \"migrate.hal9.ai/v1\"\nkind:       \"MigrationPlan\"\nmetadata: name: \"loop\"\n")
	b.WriteString("spec: phases: [")
	var names []string
	for i := range levels {
		fmt.Fprintf(&b, "for i%d in list.Range(0, %d, 1) ", i, n)
		names = append(names, fmt.Sprintf("\\(i%d)", i))
	}
	fmt.Fprintf(&b, "{name: \"p-%s\", steps: [100]}]\n", strings.Join(names, "-"))
	return []byte(b.String())
}

// CUEMemoryBomb returns a CUE plan that doubles a string levels times: 2^levels
// bytes, quickly.
func CUEMemoryBomb(levels int) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: \"migrate.hal9.ai/v1\"\nkind:       \"MigrationPlan\"\nmetadata: name: \"memory\"\n_s0: \"x\"\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "_s%d: _s%d + _s%d\n", i, i-1, i-1)
	}
	fmt.Fprintf(&b, "spec: target: phase: _s%d\n", levels)
	return []byte(b.String())
}

// JSONWithCUE returns a file meant to be named .json that is CUE, not JSON:
// it computes its phases with a comprehension.
func JSONWithCUE() []byte {
	return []byte(`{
  "apiVersion": "migrate.hal9.ai/v1",
  "kind": "MigrationPlan",
  "metadata": {"name": "smuggled"},
  "spec": {
    "phases": [for a in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] for b in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] {"name": "p\(a)\(b)", "steps": [100]}]
  }
}
`)
}

// DeepYAML returns a YAML plan whose spec.features nests mappings depth
// deep, in flow style ({a: {a: ...}}): 5 bytes a level.
func DeepYAML(depth int) []byte {
	return []byte(header("deep", "MigrationPlan") + "spec:\n  features: " + strings.Repeat("{a: ", depth) + "1" + strings.Repeat("}", depth) + "\n")
}

// ManyFlags returns the YAML text of a valid plan with n feature flags, of
// about 50 bytes each: 400,000 make 20 MB.
func ManyFlags(name string, n int) []byte {
	var b strings.Builder
	b.WriteString(header(name, "MigrationPlan"))
	b.WriteString(`spec:
  target: {phase: full}
  driver:
    docker: {stable: {service: a}, candidate: {service: b}}
  phases:
    - {name: full, steps: [100]}
  features:
`)
	for i := range n {
		fmt.Fprintf(&b, "    feature_flag_of_a_long_descriptive_name_%07d: %d\n", i, i%101)
	}
	return []byte(b.String())
}
