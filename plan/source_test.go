package plan

import (
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

// cuePlan is a CUE plan whose phases are written with a definition and
// whose guardrails and steps come from comprehensions. %s is replaced by
// the test's phases.
const cuePlan = `package plans

#Canary: {
	name: string
	soak: "24h"
	...
}

_errors: ["errors", "latency"]

apiVersion: "migrate.hal9.ai/v1"
kind:       "MigrationPlan"
metadata: name: "shop"
spec: {
	target: phase: "full"
	driver: docker: {stable: service: "a", candidate: service: "b"}
	phases: [
%s
	]
	guardrails: [for n in _errors {name: n, prometheus: query: "q", max: 1}]
}
`

// TestErrorPositionsInCUEExpressions checks where errors in CUE plans
// written with definitions and comprehensions point: at the offending
// field inside a unification with a definition, and at the list for an
// element a comprehension makes.
func TestErrorPositionsInCUEExpressions(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name, phases, want string
	}{
		{"a field beside a definition",
			"\t\t#Canary & {name: \"canary\", steps: [5, 500]},\n\t\t{name: \"full\", steps: [100]},",
			`p.cue:18:41: spec.phases.0.steps.1: invalid value 500 (expected an integer > 0 and <= 100)`},
		{"a field in parentheses",
			"\t\t(#Canary & {name: \"canary\"}) & {steps: [5, 500]},\n\t\t{name: \"full\", steps: [100]},",
			`p.cue:18:46: spec.phases.0.steps.1: invalid value 500 (expected an integer > 0 and <= 100)`},
		{"an element made by a comprehension",
			"\t\tfor n in [\"canary\", \"canary\"] {name: n, steps: [5]},\n\t\t{name: \"full\", steps: [100]},",
			`p.cue:17:2: spec.phases.1.name: duplicate phase name "canary" (first used by spec.phases.0)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(cuePlan, "%s", tt.phases, 1)
			set := v.Validate([]Source{{Path: "p.cue", Data: []byte(src)}})
			if got := set.Errors.Error(); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestDuplicateKeysAndEmptyFilesInJSONAndCUE checks that JSON and CUE
// files are judged as YAML files are: a key given twice in a JSON object is
// an error at the repetition, even with the same value (CUE would unify
// it), and a file without a plan says so.
func TestDuplicateKeysAndEmptyFilesInJSONAndCUE(t *testing.T) {
	v := newValidator(t)
	base := string(mustRead(t, "testdata/base.json"))
	tests := []struct {
		file, data, want string
	}{
		{"p.json", strings.Replace(base, `"soak": "2h"`, `"soak": "2h", "soak": "3h"`, 1),
			`p.json:38:23: spec.phases.1.soak: duplicate key "soak" (first at line 38)`},
		{"p.json", strings.Replace(base, `"soak": "2h"`, `"soak": "2h",`+"\n"+`"soak": "2h"`, 1),
			`p.json:39:1: spec.phases.1.soak: duplicate key "soak" (first at line 38)`},
		{"p.json", strings.Replace(base, `"kind"`, `"apiVersion": "migrate.hal9.ai/v1", "kind"`, 1),
			`p.json:3:3: apiVersion: duplicate key "apiVersion" (first at line 2)`},
		{"p.json", "", `p.json:1:1: empty file (expected a MigrationPlan)`},
		{"p.cue", "", `p.cue:1:1: empty file (expected a MigrationPlan)`},
		{"p.cue", "package plans\n\n// Nothing yet.\n", `p.cue:1:1: empty file (expected a MigrationPlan)`},
	}
	for _, tt := range tests {
		set := v.Validate([]Source{{Path: tt.file, Data: []byte(tt.data)}})
		if got := set.Errors.Error(); got != tt.want {
			t.Errorf("%.60q:\n got %s\nwant %s", tt.data, got, tt.want)
		}
	}
	// Fields given twice are plain CUE.
	cue := strings.Replace(string(mustRead(t, "testdata/base.cue")), `soak:       "2h"`, `soak:       "2h"`+"\n\t\t"+`soak:       "2h"`, 1)
	if set := v.Validate([]Source{{Path: "p.cue", Data: []byte(cue)}}); len(set.Errors) > 0 || len(set.Plans) != 1 {
		t.Errorf("a CUE field given twice: %v", set.Errors)
	}
}

// TestJSONIsJSON checks that a .json file is judged by JSON's grammar, not
// CUE's, which is larger: CUE syntax in a .json file is an error where JSON
// stops, and is never evaluated.
func TestJSONIsJSON(t *testing.T) {
	v := newValidator(t)
	base := string(mustRead(t, "testdata/base.json"))
	for _, tt := range []struct {
		name, data, want string
	}{
		{"a comprehension", string(plantest.JSONWithCUE()),
			`p.json:6:17: invalid JSON: invalid character 'o' in literal false (expecting 'a')`},
		{"a comment", strings.Replace(base, `"kind"`, "// the kind\n  \"kind\"", 1),
			`p.json:3:3: invalid JSON: invalid character '/' looking for beginning of object key string`},
		{"a trailing comma", strings.Replace(base, `"new_cart": 10`, `"new_cart": 10,`, 1),
			`p.json:95:5: invalid JSON: invalid character '}' looking for beginning of object key string`},
		{"a reference", strings.Replace(base, `"name": "base"`, `"name": kind`, 1),
			`p.json:5:13: invalid JSON: invalid character 'k' looking for beginning of value`},
	} {
		set := v.Validate([]Source{{Path: "p.json", Data: []byte(tt.data)}})
		if got := set.Errors.Error(); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
	if set := v.Validate([]Source{{Path: "p.json", Data: []byte(base)}}); len(set.Plans) != 1 {
		t.Errorf("base.json: %v", set.Errors)
	}
}
