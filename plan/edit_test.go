package plan

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func editPct(n int) *int { return &n }

// TestApplyEdits checks the exact bytes ApplyEdits writes: only the edited
// values change, new fields follow their siblings' style, and removed fields
// take their own lines with them.
func TestApplyEdits(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		in    string
		edits []FileEdit
		want  string
	}{
		// YAML, block style.
		{
			name:  "yaml block: change percentage",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary\n    percentage: 5\n  phases: []\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(25)})},
			want:  "spec:\n  target:\n    phase: canary\n    percentage: 25\n  phases: []\n",
		},
		{
			name:  "yaml block: change phase, remove percentage",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary\n    percentage: 5\n  phases: []\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\n  target:\n    phase: full\n  phases: []\n",
		},
		{
			name:  "yaml block: add percentage after phase",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary # where\n  phases: []\n",
			edits: []FileEdit{SetTarget(Target{Phase: "ramp", Percentage: editPct(50)})},
			want:  "spec:\n  target:\n    phase: ramp # where\n    percentage: 50\n  phases: []\n",
		},
		{
			name:  "yaml block: add percentage after phase when phase is not last",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary\n    note: x\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  "spec:\n  target:\n    phase: canary\n    percentage: 5\n    note: x\n",
		},
		{
			name:  "yaml block: percentage first, removed",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    percentage: 5\n    phase: canary\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\n  target:\n    phase: full\n",
		},
		{
			name: "yaml block: comments on and around the target lines survive",
			file: "p.yaml",
			in: `# header
spec:
  # where we are
  target:          # moved by pull requests
    # the phase
    phase: canary      # canary!
    # the share
    percentage: 5      # five percent
  # after the target
  phases: []
`,
			edits: []FileEdit{SetTarget(Target{Phase: "ramp-up", Percentage: editPct(50)})},
			want: `# header
spec:
  # where we are
  target:          # moved by pull requests
    # the phase
    phase: ramp-up      # canary!
    # the share
    percentage: 50      # five percent
  # after the target
  phases: []
`,
		},
		{
			name: "yaml block: removing the percentage keeps the comment above it",
			file: "p.yaml",
			in: `spec:
  target:          # moved by pull requests
    phase: canary      # canary!
    # the share
    percentage: 5      # five percent
  # after the target
  phases: []
`,
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want: `spec:
  target:          # moved by pull requests
    phase: full      # canary!
    # the share
  # after the target
  phases: []
`,
		},
		{
			name:  "yaml block: value on the line after its key",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase:\n      canary\n    percentage:\n      5\n  x: 1\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\n  target:\n    phase:\n      full\n  x: 1\n",
		},
		{
			name:  "yaml: single-quoted value stays single-quoted",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: 'canary'\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\n  target:\n    phase: 'full'\n",
		},
		{
			name:  "yaml: double-quoted value stays double-quoted",
			file:  "p.yaml",
			in:    "spec:\n  \"target\":\n    \"phase\": \"canary\"\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full", Percentage: editPct(100)})},
			want:  "spec:\n  \"target\":\n    \"phase\": \"full\"\n    \"percentage\": 100\n",
		},
		{
			name:  "yaml: a plain value that would not read back as a string is quoted",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary\n",
			edits: []FileEdit{SetTarget(Target{Phase: "true"})},
			want:  "spec:\n  target:\n    phase: \"true\"\n",
		},
		{
			name:  "yaml: a word YAML 1.1 reads as a boolean is quoted",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary\n",
			edits: []FileEdit{SetTarget(Target{Phase: "on"})},
			want:  "spec:\n  target:\n    phase: \"on\"\n",
		},
		{
			name:  "yaml: an unchanged target changes nothing",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: \"canary\"  # x\n    percentage: 0x0a\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(10)})},
			want:  "spec:\n  target:\n    phase: \"canary\"  # x\n    percentage: 0x0a\n",
		},
		{
			name:  "yaml: indentation of four",
			file:  "p.yaml",
			in:    "spec:\n    target:\n        phase: canary\n    phases:\n        - name: canary\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)}), SetFeature("flag", 10)},
			want:  "spec:\n    target:\n        phase: canary\n        percentage: 5\n    phases:\n        - name: canary\n    features:\n        flag: 10\n",
		},
		{
			name:  "yaml: no line break at the end of the file, added to",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  "spec:\n  target:\n    phase: canary\n    percentage: 5",
		},
		{
			name:  "yaml: no line break at the end of the file, removed from",
			file:  "p.yaml",
			in:    "spec:\n  target:\n    phase: canary\n    percentage: 5",
			edits: []FileEdit{SetTarget(Target{Phase: "canary"})},
			want:  "spec:\n  target:\n    phase: canary",
		},

		// YAML, flow style.
		{
			name:  "yaml flow: change both",
			file:  "p.yml",
			in:    "spec:\n  target: {phase: canary, percentage: 5}  # now\n",
			edits: []FileEdit{SetTarget(Target{Phase: "ramp", Percentage: editPct(75)})},
			want:  "spec:\n  target: {phase: ramp, percentage: 75}  # now\n",
		},
		{
			name:  "yaml flow: remove percentage",
			file:  "p.yml",
			in:    "spec:\n  target: {phase: canary, percentage: 5}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\n  target: {phase: full}\n",
		},
		{
			name:  "yaml flow: remove percentage written first",
			file:  "p.yml",
			in:    "spec:\n  target: {percentage: 5, phase: canary}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\n  target: {phase: full}\n",
		},
		{
			name:  "yaml flow: add percentage",
			file:  "p.yml",
			in:    "spec:\n  target: {phase: 'canary'}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(10)})},
			want:  "spec:\n  target: {phase: 'canary', percentage: 10}\n",
		},
		{
			name:  "yaml flow: over several lines",
			file:  "p.yml",
			in:    "spec:\n  target: {\n    phase: canary,\n    percentage: 5\n  }\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary"})},
			want:  "spec:\n  target: {\n    phase: canary\n  }\n",
		},
		{
			name:  "yaml flow: over several lines, added to",
			file:  "p.yml",
			in:    "spec:\n  target: {\n    phase: canary\n  }\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  "spec:\n  target: {\n    phase: canary,\n    percentage: 5\n  }\n",
		},
		{
			name:  "yaml flow: the whole file",
			file:  "p.yaml",
			in:    "{spec: {target: {phase: canary}, phases: []}}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)}), SetFeature("a", 1)},
			want:  "{spec: {target: {phase: canary, percentage: 5}, phases: [], features: {a: 1}}}\n",
		},

		// YAML feature flags.
		{
			name:  "yaml features: change",
			file:  "p.yaml",
			in:    "spec:\n  features:\n    a: 10   # a\n    b: 20   # b\n",
			edits: []FileEdit{SetFeature("a", 5)},
			want:  "spec:\n  features:\n    a: 5   # a\n    b: 20   # b\n",
		},
		{
			name:  "yaml features: add",
			file:  "p.yaml",
			in:    "spec:\n  features:\n    a: 10   # a\n    b: 20   # b\n\n# end\n",
			edits: []FileEdit{SetFeature("c.d-e", 30)},
			want:  "spec:\n  features:\n    a: 10   # a\n    b: 20   # b\n    c.d-e: 30\n\n# end\n",
		},
		{
			name:  "yaml features: remove",
			file:  "p.yaml",
			in:    "spec:\n  features:\n    a: 10   # a\n    b: 20   # b\n",
			edits: []FileEdit{RemoveFeature("a")},
			want:  "spec:\n  features:\n    b: 20   # b\n",
		},
		{
			name:  "yaml features: removing the last flag removes features",
			file:  "p.yaml",
			in:    "spec:\n  target: {phase: x}\n  features:\n    a: 10\n  rollback: {to: start}\n",
			edits: []FileEdit{RemoveFeature("a")},
			want:  "spec:\n  target: {phase: x}\n  rollback: {to: start}\n",
		},
		{
			name: "yaml features: created after a nested block",
			file: "p.yaml",
			in: `spec:
  guardrails:
  - name: errors
    prometheus:
      query: |
        sum(x)
  # trailing comment
`,
			edits: []FileEdit{SetFeature("new_cart", 10)},
			want: `spec:
  guardrails:
  - name: errors
    prometheus:
      query: |
        sum(x)
  features:
    new_cart: 10
  # trailing comment
`,
		},
		{
			name:  "yaml features: empty features key",
			file:  "p.yaml",
			in:    "spec:\n  features:   # none yet\n  x: 1\n",
			edits: []FileEdit{SetFeature("a", 1)},
			want:  "spec:\n  features:   # none yet\n    a: 1\n  x: 1\n",
		},
		{
			name:  "yaml features: flow, add and remove",
			file:  "p.yaml",
			in:    "spec:\n  features: {a: 1, b: 2}\n",
			edits: []FileEdit{SetFeature("c", 3), RemoveFeature("a")},
			want:  "spec:\n  features: {b: 2, c: 3}\n",
		},
		{
			name:  "yaml features: flow, last one removed",
			file:  "p.yaml",
			in:    "spec:\n  target: {phase: x}\n  features: {a: 1}\n",
			edits: []FileEdit{RemoveFeature("a")},
			want:  "spec:\n  target: {phase: x}\n",
		},
		{
			name:  "yaml features: empty flow mapping",
			file:  "p.yaml",
			in:    "spec:\n  features: {}\n",
			edits: []FileEdit{SetFeature("a", 1)},
			want:  "spec:\n  features: {a: 1}\n",
		},

		// CRLF.
		{
			name:  "crlf: add percentage and a feature",
			file:  "p.yaml",
			in:    "spec:\r\n  target:\r\n    phase: canary\r\n  phases: []\r\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)}), SetFeature("a", 1)},
			want:  "spec:\r\n  target:\r\n    phase: canary\r\n    percentage: 5\r\n  phases: []\r\n  features:\r\n    a: 1\r\n",
		},
		{
			name:  "crlf: remove percentage",
			file:  "p.yaml",
			in:    "spec:\r\n  target:\r\n    phase: canary\r\n    percentage: 5\r\n  phases: []\r\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec:\r\n  target:\r\n    phase: full\r\n  phases: []\r\n",
		},
		{
			name:  "crlf json: add percentage",
			file:  "p.json",
			in:    "{\r\n  \"spec\": {\r\n    \"target\": {\r\n      \"phase\": \"canary\"\r\n    }\r\n  }\r\n}\r\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  "{\r\n  \"spec\": {\r\n    \"target\": {\r\n      \"phase\": \"canary\",\r\n      \"percentage\": 5\r\n    }\r\n  }\r\n}\r\n",
		},

		// JSON.
		{
			name: "json 2: remove percentage",
			file: "p.json",
			in: `{
  "spec": {
    "target": {
      "phase": "canary",
      "percentage": 5
    }
  }
}
`,
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want: `{
  "spec": {
    "target": {
      "phase": "full"
    }
  }
}
`,
		},
		{
			name: "json 2: add percentage, create features",
			file: "p.json",
			in: `{
  "spec": {
    "target": {
      "phase": "canary"
    },
    "phases": []
  }
}`,
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(10)}), SetFeature("new_cart", 25)},
			want: `{
  "spec": {
    "target": {
      "phase": "canary",
      "percentage": 10
    },
    "phases": [],
    "features": {
      "new_cart": 25
    }
  }
}`,
		},
		{
			name: "json 4: change, add and remove flags",
			file: "p.json",
			in: `{
    "spec": {
        "target": {
            "percentage": 5,
            "phase": "canary"
        },
        "features": {
            "a": 1,
            "b": 2
        }
    }
}
`,
			edits: []FileEdit{SetTarget(Target{Phase: "full"}), SetFeature("b", 3), SetFeature("c", 4), RemoveFeature("a")},
			want: `{
    "spec": {
        "target": {
            "phase": "full"
        },
        "features": {
            "b": 3,
            "c": 4
        }
    }
}
`,
		},
		{
			name: "json 4: removing the last flag removes features and the comma before it",
			file: "p.json",
			in: `{
    "spec": {
        "target": {"phase": "canary"},
        "features": {
            "a": 1
        }
    }
}
`,
			edits: []FileEdit{RemoveFeature("a")},
			want: `{
    "spec": {
        "target": {"phase": "canary"}
    }
}
`,
		},
		{
			name:  "json one line, compact",
			file:  "p.json",
			in:    `{"spec":{"target":{"phase":"canary","percentage":5},"phases":[]}}`,
			edits: []FileEdit{SetTarget(Target{Phase: "full"}), SetFeature("a", 1)},
			want:  `{"spec":{"target":{"phase":"full"},"phases":[],"features":{"a":1}}}`,
		},
		{
			name:  "json one line, spaced",
			file:  "p.json",
			in:    `{"spec": {"target": {"phase": "canary"}}}` + "\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  `{"spec": {"target": {"phase": "canary", "percentage": 5}}}` + "\n",
		},

		// CUE.
		{
			name:  "cue: inline struct, change",
			file:  "p.cue",
			in:    "spec: {\n\ttarget: {phase: \"canary\", percentage: 5} // now\n}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full", Percentage: editPct(100)})},
			want:  "spec: {\n\ttarget: {phase: \"full\", percentage: 100} // now\n}\n",
		},
		{
			name:  "cue: inline struct, remove percentage",
			file:  "p.cue",
			in:    "spec: {\n\ttarget: {phase: \"canary\", percentage: 5}\n}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec: {\n\ttarget: {phase: \"full\"}\n}\n",
		},
		{
			name:  "cue: nested labels, add percentage",
			file:  "p.cue",
			in:    "spec: target: phase: \"canary\"\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(10)})},
			want:  "spec: target: {phase: \"canary\", percentage: 10}\n",
		},
		{
			name:  "cue: nested labels declared twice, remove percentage",
			file:  "p.cue",
			in:    "spec: {\n\ttarget: phase: \"canary\"\n\ttarget: percentage: 5\n\tphases: []\n}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "full"})},
			want:  "spec: {\n\ttarget: phase: \"full\"\n\tphases: []\n}\n",
		},
		{
			name:  "cue: block struct, add and remove percentage",
			file:  "p.cue",
			in:    "spec: {\n\ttarget: {\n\t\tphase: \"canary\"\n\t}\n}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  "spec: {\n\ttarget: {\n\t\tphase: \"canary\"\n\t\tpercentage: 5\n\t}\n}\n",
		},
		{
			name:  "cue: aligned block struct, remove percentage",
			file:  "p.cue",
			in:    "spec: target: {\n\tphase:      \"canary\"\n\tpercentage: 10\n}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "ramp"})},
			want:  "spec: target: {\n\tphase:      \"ramp\"\n}\n",
		},
		{
			name:  "cue: features, create and add",
			file:  "p.cue",
			in:    "spec: {\n\ttarget: phase: \"canary\"\n}\n",
			edits: []FileEdit{SetFeature("a", 1), SetFeature("b-c", 2)},
			want:  "spec: {\n\ttarget: phase: \"canary\"\n\tfeatures: {a: 1, \"b-c\": 2}\n}\n",
		},
		{
			name:  "cue: features, remove the last one",
			file:  "p.cue",
			in:    "spec: {\n\ttarget: phase: \"canary\"\n\tfeatures: {\n\t\ta: 1\n\t}\n}\n",
			edits: []FileEdit{RemoveFeature("a")},
			want:  "spec: {\n\ttarget: phase: \"canary\"\n}\n",
		},
		{
			name:  "cue: references elsewhere are left alone",
			file:  "p.cue",
			in:    "let p = \"canary\"\n_soak: \"1h\"\nspec: {\n\ttarget: {phase: \"shadow\"}\n\tphases: [{name: p, soak: _soak}]\n}\n",
			edits: []FileEdit{SetTarget(Target{Phase: "canary", Percentage: editPct(5)})},
			want:  "let p = \"canary\"\n_soak: \"1h\"\nspec: {\n\ttarget: {phase: \"canary\", percentage: 5}\n\tphases: [{name: p, soak: _soak}]\n}\n",
		},

		// Annotations.
		{
			name:  "yaml annotations: created under metadata, after its last field",
			file:  "p.yaml",
			in:    "metadata:\n  name: shop # the name\n  labels:\n    team: a\n\nspec:\n  target: {phase: canary}\n",
			edits: []FileEdit{SetAnnotation("migrate.hal9.ai/force-rollback", "canary 35%")},
			want:  "metadata:\n  name: shop # the name\n  labels:\n    team: a\n  annotations:\n    migrate.hal9.ai/force-rollback: \"canary 35%\"\n\nspec:\n  target: {phase: canary}\n",
		},
		{
			name:  "yaml annotations: replaced in its quoting style, others kept",
			file:  "p.yaml",
			in:    "metadata:\n  name: shop\n  annotations:\n    owner: 'team a'\n    migrate.hal9.ai/force-rollback: 'x'  # set by rollback\nspec: {}\n",
			edits: []FileEdit{SetAnnotation("migrate.hal9.ai/force-rollback", "canary 35%")},
			want:  "metadata:\n  name: shop\n  annotations:\n    owner: 'team a'\n    migrate.hal9.ai/force-rollback: 'canary 35%'  # set by rollback\nspec: {}\n",
		},
		{
			name:  "yaml annotations: flow metadata",
			file:  "p.yaml",
			in:    "metadata: {name: shop}\nspec: {}\n",
			edits: []FileEdit{SetAnnotation("a/b", "c")},
			want:  "metadata: {name: shop, annotations: {a/b: c}}\nspec: {}\n",
		},
		{
			name:  "crlf annotations: created",
			file:  "p.yaml",
			in:    "metadata:\r\n  name: shop\r\nspec: {}\r\n",
			edits: []FileEdit{SetAnnotation("a", "b")},
			want:  "metadata:\r\n  name: shop\r\n  annotations:\r\n    a: b\r\nspec: {}\r\n",
		},
		{
			name: "json annotations: created",
			file: "p.json",
			in: `{
  "metadata": {
    "name": "shop"
  },
  "spec": {}
}
`,
			edits: []FileEdit{SetAnnotation("migrate.hal9.ai/force-rollback", "canary 35%")},
			want: `{
  "metadata": {
    "name": "shop",
    "annotations": {
      "migrate.hal9.ai/force-rollback": "canary 35%"
    }
  },
  "spec": {}
}
`,
		},
		{
			name:  "json one line annotations: added to",
			file:  "p.json",
			in:    `{"metadata":{"name":"shop","annotations":{"a":"b"}},"spec":{}}`,
			edits: []FileEdit{SetAnnotation("c", "d")},
			want:  `{"metadata":{"name":"shop","annotations":{"a":"b","c":"d"}},"spec":{}}`,
		},
		{
			name:  "cue annotations: created in a block struct",
			file:  "p.cue",
			in:    "metadata: {\n\tname: \"shop\"\n}\nspec: {}\n",
			edits: []FileEdit{SetAnnotation("migrate.hal9.ai/force-rollback", "canary 35%")},
			want:  "metadata: {\n\tname: \"shop\"\n\tannotations: \"migrate.hal9.ai/force-rollback\": \"canary 35%\"\n}\nspec: {}\n",
		},
		{
			name:  "yaml annotations: removed, the others kept",
			file:  "p.yaml",
			in:    "metadata:\n  name: shop\n  annotations:\n    owner: 'team a'\n    migrate.hal9.ai/restore-checkpoint: pre-canary  # set by state restore\nspec: {}\n",
			edits: []FileEdit{RemoveAnnotation("migrate.hal9.ai/restore-checkpoint")},
			want:  "metadata:\n  name: shop\n  annotations:\n    owner: 'team a'\nspec: {}\n",
		},
		{
			name:  "yaml annotations: the last removed, with the mapping",
			file:  "p.yaml",
			in:    "metadata:\n  name: shop\n  annotations:\n    migrate.hal9.ai/force-rollback: \"canary 35%\"\nspec: {}\n",
			edits: []FileEdit{RemoveAnnotation("migrate.hal9.ai/force-rollback")},
			want:  "metadata:\n  name: shop\nspec: {}\n",
		},
		{
			name:  "yaml annotations: removing one that is not there changes nothing",
			file:  "p.yaml",
			in:    "metadata:\n  name: shop\nspec: {}\n",
			edits: []FileEdit{RemoveAnnotation("migrate.hal9.ai/force-rollback")},
			want:  "metadata:\n  name: shop\nspec: {}\n",
		},
		{
			name:  "json annotations: the last removed",
			file:  "p.json",
			in:    `{"metadata":{"name":"shop","annotations":{"a":"b"}},"spec":{}}`,
			edits: []FileEdit{RemoveAnnotation("a")},
			want:  `{"metadata":{"name":"shop"},"spec":{}}`,
		},
		{
			name:  "cue annotations: replaced",
			file:  "p.cue",
			in:    "metadata: name: \"shop\"\nmetadata: annotations: \"migrate.hal9.ai/force-rollback\": \"canary 5%\"\nspec: {}\n",
			edits: []FileEdit{SetAnnotation("migrate.hal9.ai/force-rollback", "canary 35%")},
			want:  "metadata: name: \"shop\"\nmetadata: annotations: \"migrate.hal9.ai/force-rollback\": \"canary 35%\"\nspec: {}\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ApplyEdits(tt.file, []byte(tt.in), tt.edits...)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestApplyEditsRefuses checks the edits ApplyEdits will not make, and that
// each error names the file, line, column and field.
func TestApplyEditsRefuses(t *testing.T) {
	tests := []struct {
		name string
		file string
		in   string
		edit FileEdit
		want string
	}{
		{"cue percentage computed", "plan/x.cue",
			"_p: 5\nspec: {\n\ttarget: {\n\t\tphase: \"canary\"\n\t\tpercentage: _p + 5\n\t}\n}\n",
			SetTarget(Target{Phase: "canary", Percentage: editPct(10)}),
			"plan/x.cue:5:15: spec.target.percentage: computed by an expression; edit it by hand"},
		{"cue percentage removal keeps a computed phase", "x.cue",
			"_t: \"canary\"\nspec: target: phase: _t\n",
			SetTarget(Target{Phase: "full"}),
			"x.cue:2:22: spec.target.phase: computed by an expression; edit it by hand"},
		{"cue target is a reference", "x.cue",
			"#T: {phase: \"canary\"}\nspec: target: #T\n",
			SetTarget(Target{Phase: "full"}),
			"x.cue:2:15: spec.target: computed by an expression; edit it by hand"},
		{"cue target from an embedding", "x.cue",
			"#Base: {target: phase: \"canary\"}\nspec: {\n\t#Base\n}\n",
			SetTarget(Target{Phase: "full"}),
			"x.cue:3:2: spec.target: may be declared by this expression; edit it by hand"},
		{"cue interpolated phase", "x.cue",
			"_n: \"can\"\nspec: target: phase: \"\\(_n)ary\"\n",
			SetTarget(Target{Phase: "full"}),
			"x.cue:2:22: spec.target.phase: computed by an expression; edit it by hand"},
		{"yaml alias", "x.yaml",
			"base: &t {phase: canary}\nspec:\n  target: *t\n",
			SetTarget(Target{Phase: "full"}),
			"x.yaml:3:11: spec.target: written as an alias (*t); edit it by hand"},
		{"yaml anchor", "x.yaml",
			"spec:\n  target: &t {phase: canary}\nother: *t\n",
			SetTarget(Target{Phase: "full"}),
			"x.yaml:2:11: spec.target: anchored (&t), so aliases may share it; edit it by hand"},
		{"yaml merge key", "x.yaml",
			"base: &b {phase: canary}\nspec:\n  target:\n    <<: *b\n",
			SetTarget(Target{Phase: "full"}),
			"x.yaml:4:5: spec.target: a merge key (<<) can supply fields; edit it by hand"},
		{"yaml block scalar", "x.yaml",
			"spec:\n  target:\n    phase: >-\n      canary\n",
			SetTarget(Target{Phase: "full"}),
			"x.yaml:3:12: spec.target.phase: written as a block scalar (| or >); edit it by hand"},
		{"yaml plain scalar over two lines", "x.yaml",
			"spec:\n  target:\n    phase: can\n      ary\n",
			SetTarget(Target{Phase: "full"}),
			"x.yaml:3:12: spec.target.phase: written over several lines; edit it by hand"},
		{"yaml tag", "x.yaml",
			"spec:\n  target:\n    percentage: !!int 5\n",
			SetTarget(Target{Phase: "full", Percentage: editPct(1)}),
			"x.yaml:3:17: spec.target.percentage: written with an explicit tag; edit it by hand"},
		{"no such feature", "x.yaml",
			"spec:\n  features:\n    a: 1\n",
			RemoveFeature("b"),
			"x.yaml:2:3: spec.features.b: no such feature flag"},
		{"no features at all", "x.json",
			"{\"spec\": {}}",
			RemoveFeature("b"),
			"x.json:1:2: spec.features.b: no such feature flag"},
		{"unparsable file", "x.yaml",
			"spec: [\n",
			SetTarget(Target{Phase: "full"}),
			"x.yaml:1:1: invalid YAML: did not find expected node content"},
		{"not a plan file", "x.txt", "", SetTarget(Target{Phase: "full"}),
			"x.txt: unknown file type (expected .yaml, .yml, .json or .cue)"},
		{"empty phase", "x.yaml", "spec: {}\n", SetTarget(Target{}),
			"x.yaml: cannot edit: the target needs a phase"},
		{"empty edit", "x.yaml", "spec: {}\n", FileEdit{},
			"x.yaml: cannot edit: empty edit"},
		{"annotation without a key", "x.yaml", "metadata: {name: x}\n", SetAnnotation("", "v"),
			"x.yaml: cannot edit: an annotation needs a key"},
		{"annotations written as an alias", "x.yaml",
			"base: &a {k: v}\nmetadata:\n  name: x\n  annotations: *a\n",
			SetAnnotation("k", "w"),
			"x.yaml:4:16: metadata.annotations: written as an alias (*a); edit it by hand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ApplyEdits(tt.file, []byte(tt.in), tt.edit)
			if err == nil {
				t.Fatalf("no error; got:\n%s", got)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tt.want)
			}
		})
	}
}

// editFiles returns the example plans, the test plans (testdata/edit holds
// plans in the styles the examples do not use), a CRLF copy of each
// YAML one, and each JSON one on one line and indented by four.
func editFiles(t testing.TB) []Source {
	t.Helper()
	var out []Source
	for _, pattern := range []string{"../examples/plans/*", "../examples/plans/*/*", "testdata/base.*", "testdata/edit/*"} {
		names, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if FormatOf(name) == "" {
				continue
			}
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, Source{Path: name, Data: data})
			switch FormatOf(name) {
			case FormatYAML:
				crlf := bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
				out = append(out, Source{Path: strings.TrimSuffix(name, ".yaml") + "-crlf.yaml", Data: crlf})
			case FormatJSON:
				var compact, four bytes.Buffer
				if err := json.Compact(&compact, data); err != nil {
					t.Fatal(err)
				}
				if err := json.Indent(&four, data, "", "    "); err != nil {
					t.Fatal(err)
				}
				base := strings.TrimSuffix(name, ".json")
				out = append(out, Source{Path: base + "-compact.json", Data: compact.Bytes()},
					Source{Path: base + "-indent4.json", Data: four.Bytes()})
			}
		}
	}
	if len(out) < 8 {
		t.Fatalf("found only %d plans", len(out))
	}
	return out
}

// editChangedLines diffs a and b by lines (a longest common subsequence) and
// returns the 1-based numbers of the lines of a that were removed and of the
// lines of b that were added.
func editChangedLines(a, b []byte) (removed, added []int) {
	la, lb := bytes.SplitAfter(a, []byte("\n")), bytes.SplitAfter(b, []byte("\n"))
	// lcs[i][j] is the length of the longest common subsequence of la[i:]
	// and lb[j:].
	lcs := make([][]int, len(la)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(lb)+1)
	}
	for i := len(la) - 1; i >= 0; i-- {
		for j := len(lb) - 1; j >= 0; j-- {
			if bytes.Equal(la[i], lb[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(la) || j < len(lb) {
		switch {
		case i < len(la) && j < len(lb) && bytes.Equal(la[i], lb[j]):
			i, j = i+1, j+1
		case j < len(lb) && (i == len(la) || lcs[i][j+1] >= lcs[i+1][j]):
			added = append(added, j+1)
			j++
		default:
			removed = append(removed, i+1)
			i++
		}
	}
	return removed, added
}

// editTargetLines returns the lines of spec.target in p's file, from its key to
// its last scalar.
func editTargetLines(p *Plan) (from, to int) {
	from, _ = p.Locate("spec.target")
	to = from
	for _, f := range []string{"spec.target.phase", "spec.target.percentage"} {
		if l, _ := p.Locate(f); l > to {
			to = l
		}
	}
	return from, to
}

// TestApplyEditsExamples moves the target of every example plan to every
// position of its timeline and checks that the result is valid, is at that
// position, differs from the original in nothing but its target, and in no
// line outside the target's.
func TestApplyEditsExamples(t *testing.T) {
	v := newValidator(t)
	for _, src := range editFiles(t) {
		t.Run(filepath.Base(src.Path), func(t *testing.T) {
			p, err := v.ValidateOne(src)
			if err != nil {
				t.Fatal(err)
			}
			type move struct {
				target Target
				want   Position
			}
			var moves []move
			for _, s := range p.Timeline(Last) {
				if s.Kind != PhaseSteps {
					moves = append(moves, move{Target{Phase: s.Phase}, s.Position})
					continue
				}
				moves = append(moves, move{Target{Phase: s.Phase, Percentage: editPct(s.Percentage)}, s.Position})
				if steps := p.Spec.Phases[p.PhaseIndex(s.Phase)].Steps; s.Percentage == steps[len(steps)-1] {
					moves = append(moves, move{Target{Phase: s.Phase}, s.Position})
				}
			}
			for _, m := range moves {
				out, err := ApplyEdits(src.Path, src.Data, SetTarget(m.target))
				if err != nil {
					t.Fatalf("%v: %v", m.want, err)
				}
				q, err := v.ValidateOne(Source{Path: src.Path, Data: out})
				if err != nil {
					t.Fatalf("%v: result does not validate: %v\n%s", m.want, err, out)
				}
				if got := q.TargetPosition(); got != m.want {
					t.Errorf("%v: target is at %v", m.want, got)
				}
				if !reflect.DeepEqual(q.Spec.Target, m.target) {
					t.Errorf("%v: target is %+v", m.want, q.Spec.Target)
				}
				same := *q
				same.Spec.Target = p.Spec.Target
				if !reflect.DeepEqual(same.Spec, p.Spec) || !reflect.DeepEqual(same.Metadata, p.Metadata) {
					t.Errorf("%v: more than the target changed", m.want)
				}
				removed, added := editChangedLines(src.Data, out)
				pFrom, pTo := editTargetLines(p)
				qFrom, qTo := editTargetLines(q)
				for _, l := range removed {
					if l < pFrom || l > pTo {
						t.Errorf("%v: changed line %d of the original, outside the target's %d-%d:\n%s", m.want, l, pFrom, pTo, out)
					}
				}
				for _, l := range added {
					if l < qFrom || l > qTo {
						t.Errorf("%v: wrote line %d, outside the target's %d-%d:\n%s", m.want, l, qFrom, qTo, out)
					}
				}
				if bytes.Contains(src.Data, []byte("\r\n")) && bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) {
					t.Errorf("%v: a line break other than CRLF was written:\n%q", m.want, out)
				}
			}
		})
	}
}

// TestApplyEditsExampleFeatures changes, adds and removes the feature flags
// of every example plan, and checks that nothing else changes.
func TestApplyEditsExampleFeatures(t *testing.T) {
	v := newValidator(t)
	for _, src := range editFiles(t) {
		t.Run(filepath.Base(src.Path), func(t *testing.T) {
			p, err := v.ValidateOne(src)
			if err != nil {
				t.Fatal(err)
			}
			// flags returns the plan's flags changed by f, nil when none is left.
			flags := func(f func(map[string]int)) map[string]int {
				m := maps.Clone(p.Spec.Features)
				if m == nil {
					m = map[string]int{}
				}
				f(m)
				if len(m) == 0 {
					return nil
				}
				return m
			}
			type change struct {
				edits []FileEdit
				want  map[string]int
			}
			changes := []change{
				{[]FileEdit{SetFeature("brand_new", 42)}, flags(func(m map[string]int) { m["brand_new"] = 42 })},
			}
			var removeAll []FileEdit
			for _, name := range slices.Sorted(maps.Keys(p.Spec.Features)) {
				changes = append(changes,
					change{[]FileEdit{SetFeature(name, 77)}, flags(func(m map[string]int) { m[name] = 77 })},
					change{[]FileEdit{RemoveFeature(name)}, flags(func(m map[string]int) { delete(m, name) })})
				removeAll = append(removeAll, RemoveFeature(name))
			}
			if len(removeAll) > 0 {
				changes = append(changes, change{removeAll, nil})
			}
			for _, c := range changes {
				edits := c.edits
				out, err := ApplyEdits(src.Path, src.Data, edits...)
				if err != nil {
					t.Fatalf("%v: %v", edits, err)
				}
				q, err := v.ValidateOne(Source{Path: src.Path, Data: out})
				if err != nil {
					t.Fatalf("%v: result does not validate: %v\n%s", edits, err, out)
				}
				if !reflect.DeepEqual(q.Spec.Features, c.want) {
					t.Errorf("%v: features are %v, want %v", edits, q.Spec.Features, c.want)
				}
				same := *q
				same.Spec.Features = p.Spec.Features
				if !reflect.DeepEqual(same.Spec, p.Spec) {
					t.Errorf("%v: more than the features changed", edits)
				}
			}
		})
	}
}

// TestApplyEditsExampleAnnotation sets an annotation on every example plan,
// twice (the second time replaces it), and checks that nothing else changes
// and that no line outside metadata is touched.
func TestApplyEditsExampleAnnotation(t *testing.T) {
	const key = "migrate.hal9.ai/force-rollback"
	v := newValidator(t)
	for _, src := range editFiles(t) {
		t.Run(filepath.Base(src.Path), func(t *testing.T) {
			p, err := v.ValidateOne(src)
			if err != nil {
				t.Fatal(err)
			}
			data, cur := src.Data, p
			for _, value := range []string{"canary 35%", "it's \"quoted\": #1"} {
				out, err := ApplyEdits(src.Path, data, SetAnnotation(key, value))
				if err != nil {
					t.Fatalf("%s: %v", value, err)
				}
				q, err := v.ValidateOne(Source{Path: src.Path, Data: out})
				if err != nil {
					t.Fatalf("%s: result does not validate: %v\n%s", value, err, out)
				}
				want := maps.Clone(p.Metadata.Annotations)
				if want == nil {
					want = map[string]string{}
				}
				want[key] = value
				if !reflect.DeepEqual(q.Metadata.Annotations, want) {
					t.Errorf("%s: annotations are %v, want %v", value, q.Metadata.Annotations, want)
				}
				if !reflect.DeepEqual(q.Spec, p.Spec) || q.Metadata.Name != p.Metadata.Name || !reflect.DeepEqual(q.Metadata.Labels, p.Metadata.Labels) {
					t.Errorf("%s: more than the annotation changed", value)
				}
				if FormatOf(src.Path) == FormatYAML {
					// In the YAML examples metadata comes before spec:
					// every changed line lies before it.
					removed, added := editChangedLines(data, out)
					before, _ := cur.Locate("spec")
					after, _ := q.Locate("spec")
					for _, l := range removed {
						if l >= before {
							t.Errorf("%s: changed line %d, at or after spec (line %d)", value, l, before)
						}
					}
					for _, l := range added {
						if l >= after {
							t.Errorf("%s: wrote line %d, at or after spec (line %d)", value, l, after)
						}
					}
				}
				cur = q
				data = out
			}
		})
	}
}

func TestFileEditString(t *testing.T) {
	for _, tt := range []struct {
		e    FileEdit
		want string
	}{
		{SetTarget(Target{Phase: "canary", Percentage: editPct(25)}), "set spec.target to canary 25%"},
		{SetTarget(Target{Phase: "full"}), "set spec.target to full (its last step)"},
		{SetFeature("a", 5), "set feature a to 5%"},
		{RemoveFeature("a"), "remove feature a"},
		{SetAnnotation("migrate.hal9.ai/force-rollback", "canary 35%"), `set annotation migrate.hal9.ai/force-rollback to "canary 35%"`},
	} {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestEditChangedLines(t *testing.T) {
	for _, tt := range []struct {
		a, b           string
		removed, added []int
	}{
		{"a\nb\nc\n", "a\nb\nc\n", nil, nil},
		{"a\nb\nc\n", "a\nB\nc\n", []int{2}, []int{2}},
		{"a\n# x\nb\nc\n", "A\n# x\nc\n", []int{1, 3}, []int{1}},
		{"a\nb\n", "a\nb\nc\n", nil, []int{3}},
		{"a\nb", "a\nb\n", []int{2}, []int{2, 3}},
	} {
		removed, added := editChangedLines([]byte(tt.a), []byte(tt.b))
		if !reflect.DeepEqual(removed, tt.removed) || !reflect.DeepEqual(added, tt.added) {
			t.Errorf("%q -> %q: removed %v added %v, want %v %v", tt.a, tt.b, removed, added, tt.removed, tt.added)
		}
	}
}
