package plan

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var fuzzFormats = []string{".yaml", ".json", ".cue"}

// FuzzLoad feeds arbitrary files to the loader. It must never panic, every
// error must carry a position (or be a limit's, which concerns the whole
// file), and it must never accept a plan that CUE's own evaluation of the
// schema rejects. The corpus in testdata/fuzz/FuzzLoad holds alias and
// merge-key bombs and CUE syntax in a .json file besides valid plans.
func FuzzLoad(f *testing.F) {
	for i, name := range []string{"testdata/base.yaml", "testdata/base.json", "testdata/base.cue"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(i))
	}
	// Comparisons with stable: percentages, sides, resources.
	for _, name := range []string{"testdata/compare.yaml", "testdata/compare-bad.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(0))
	}
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, format uint8) {
		src := Source{Path: "fuzz" + fuzzFormats[int(format)%len(fuzzFormats)], Data: data}
		set := v.Validate([]Source{src})
		for _, e := range set.Errors {
			if e.File != src.Path || e.Message == "" {
				t.Fatalf("error without a file or message: %#v", e)
			}
			if (e.Line < 1 || e.Column < 1) && !strings.Contains(e.Message, "(limit: plans.") {
				t.Fatalf("error without a position: %#v", e)
			}
		}
		if len(set.Plans) == 0 {
			return
		}
		if len(set.Errors) > 0 {
			t.Fatalf("plan accepted with errors: %v", set.Errors)
		}
		doc, _ := parseForTest(t, src)
		if doc == nil {
			t.Fatalf("accepted a file that does not parse")
		}
		if err := cueJudges(t, v, doc); err != nil {
			t.Fatalf("accepted a plan the schema rejects: %v\n%s", err, data)
		}
	})
}

// fuzzNodes is the budget FuzzYAMLBudget expands within: small, so that
// the fuzzer finds inputs that reach it.
const fuzzNodes = 1000

// FuzzYAMLBudget feeds arbitrary YAML to the bounded reader and checks the
// budget: the value it makes never has more nodes than the budget, and
// expanding allocates in proportion to the budget and the file, never to
// what the aliases would expand to (a 549-byte bomb would take gigabytes).
// An input over the budget must get the budget's error.
func FuzzYAMLBudget(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, errs := parseYAMLTree("fuzz.yaml", data)
		if doc == nil {
			if len(errs) == 0 {
				t.Fatal("no document and no error")
			}
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		errs = doc.expandYAML(fuzzNodes)
		runtime.ReadMemStats(&after)
		if alloc, most := after.TotalAlloc-before.TotalAlloc, uint64(1<<20+1<<10*fuzzNodes+256*len(data)); alloc > most {
			t.Fatalf("expanding %d bytes within %d nodes allocated %d bytes (at most %d)", len(data), fuzzNodes, alloc, most)
		}
		if len(errs) == 1 && strings.Contains(errs[0].Message, "(limit: plans.maxNodes)") {
			if doc.value != nil {
				t.Fatal("a value from a document over the budget")
			}
			return
		}
		if n := countNodes(doc.value); n > fuzzNodes {
			t.Fatalf("%d nodes within a budget of %d", n, fuzzNodes)
		}
		if len(errs) == 0 && aliasesExpandPast(doc.node, fuzzNodes) {
			t.Fatalf("no error for a document whose aliases expand past %d nodes", fuzzNodes)
		}
	})
}

// countNodes counts the values in v, a shared one once per place it
// appears.
func countNodes(v any) int {
	n := 1
	switch x := v.(type) {
	case map[string]any:
		for _, c := range x {
			n += countNodes(c)
		}
	case []any:
		for _, c := range x {
			n += countNodes(c)
		}
	}
	return n
}

// aliasesExpandPast reports whether the values of n, with every alias
// followed, are more than max, counting as the expander does but stopping
// as soon as the count is past max.
func aliasesExpandPast(n *yaml.Node, max int) bool {
	count := 0
	var walk func(n *yaml.Node) bool
	walk = func(n *yaml.Node) bool {
		if count++; count > max {
			return true
		}
		if n.Kind == yaml.AliasNode {
			return walk(n.Alias)
		}
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 {
				continue // a key is no value
			}
			if walk(c) {
				return true
			}
		}
		return false
	}
	return walk(n)
}
