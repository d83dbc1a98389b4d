package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/schema"
)

const committed = "v1/plan.schema.json"

// TestJSONSchemaFresh fails when the committed JSON Schema is not what
// plan.cue generates: run go generate ./schema (or go run ./schema/gen).
func TestJSONSchemaFresh(t *testing.T) {
	want, err := schema.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(committed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("schema/%s is stale: run go generate ./schema and commit it", committed)
	}
}

// compile compiles the committed JSON Schema with a validator of its own
// (not CUE), as an editor would use it.
func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(committed)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(schema.JSONSchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(schema.JSONSchemaID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// instance turns a YAML plan into the JSON value a validator reads.
func instance(t *testing.T, y []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// plans returns every MigrationPlan document in the repository's examples,
// deploy folder and README, by where it comes from.
func plans(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, root := range []string{"../examples", "../deploy"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || (!strings.HasSuffix(p, ".yaml") && !strings.HasSuffix(p, ".yml")) {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			dec := yaml.NewDecoder(bytes.NewReader(b))
			for i := 0; ; i++ {
				var n yaml.Node
				if err := dec.Decode(&n); err != nil {
					if errors.Is(err, io.EOF) {
						break
					}
					return nil // not YAML a plan could be in (a template)
				}
				doc, err := yaml.Marshal(&n)
				if err != nil {
					return err
				}
				if bytes.Contains(doc, []byte("kind: MigrationPlan")) {
					out[p+"#"+string(rune('0'+i))] = doc
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1) {
		if bytes.Contains(m[1], []byte("kind: MigrationPlan")) {
			out["README.md yaml block "+string(rune('0'+i))] = m[1]
		}
	}
	return out
}

// TestExamplesValidate validates every plan in the repository against the
// committed JSON Schema.
func TestExamplesValidate(t *testing.T) {
	s := compile(t)
	ps := plans(t)
	if len(ps) < 8 {
		t.Fatalf("found only %d plans: %v", len(ps), ps)
	}
	for name, doc := range ps {
		if err := s.Validate(instance(t, doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	t.Logf("%d plans valid", len(ps))
}

// TestInvalidPlans checks that the JSON Schema rejects plans that are
// plainly wrong, as an editor would flag them.
func TestInvalidPlans(t *testing.T) {
	s := compile(t)
	base, err := os.ReadFile("../examples/plans/docker-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(instance(t, base)); err != nil {
		t.Fatalf("the base plan: %v", err)
	}
	for _, c := range []struct{ name, from, to string }{
		{"wrong apiVersion", "apiVersion: migrate.hal9.ai/v1", "apiVersion: migrate.hal9.ai/v2"},
		{"wrong kind", "kind: MigrationPlan", "kind: Migration"},
		{"name not a DNS label", "name: docker-demo", "name: Docker_Demo"},
		{"unknown spec field", "spec:\n", "spec:\n  surprise: true\n"},
		{"no spec", "spec:\n", "notspec:\n"},
		{"percentage above 100", "percentage: 10", "percentage: 150"},
		{"step above 100", "steps: [10, 25, 50]", "steps: [10, 25, 500]"},
		{"duration in words", "soak: 30s", "soak: 30 seconds"},
		{"guardrail without a name", "- name: error-rate", "- title: error-rate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(string(base), c.from) {
				t.Fatalf("the base plan has no %q", c.from)
			}
			doc := strings.Replace(string(base), c.from, c.to, 1)
			if err := s.Validate(instance(t, []byte(doc))); err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
		})
	}
}
