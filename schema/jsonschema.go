package schema

import (
	"bytes"
	"encoding/json"
	"fmt"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/ast/astutil"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/encoding/jsonschema"
)

//go:generate go run ./gen -o v1/plan.schema.json

// JSONSchemaID is the $id of the plan format's JSON Schema, and where
// editors fetch it from: its folder, v1, is the version of the plan's
// apiVersion (migrate.hal9.ai/v1). A breaking change to the format gets a
// new apiVersion and a schema in a new folder beside this one.
const JSONSchemaID = "https://raw.githubusercontent.com/hal9ai/hal9-migrate/main/schema/v1/plan.schema.json"

// JSONSchema generates the JSON Schema (draft 2020-12) of #Plan from
// plan.cue, indented, as committed in v1/plan.schema.json. Rules the schema
// raises with error() in comprehensions (oneOf, anyOf and the like between
// fields) and the checks the plan package makes in Go have no JSON Schema
// form: `hal9-migrate plan vet` remains the full check.
func JSONSchema() ([]byte, error) {
	// A fresh parse, since the comprehensions are cut out of it: their
	// error() rules fail the schema's own validation, and JSON Schema has no
	// form for them.
	f, err := parser.ParseFile(Filename, Source, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	astutil.Apply(f, func(c astutil.Cursor) bool {
		if _, ok := c.Node().(*ast.Comprehension); ok {
			if _, inStruct := c.Parent().Node().(*ast.StructLit); inStruct {
				c.Delete()
				return false
			}
		}
		return true
	}, nil)
	ctx := cuecontext.New()
	v := ctx.BuildFile(f)
	if err := v.Err(); err != nil {
		return nil, err
	}
	def := v.LookupPath(cue.ParsePath(Definition))
	if err := def.Err(); err != nil {
		return nil, err
	}
	expr, err := jsonschema.Generate(def, &jsonschema.GenerateConfig{})
	if err != nil {
		return nil, fmt.Errorf("generating the JSON Schema of %s: %w", Definition, err)
	}
	gen := ctx.BuildExpr(expr)
	if err := gen.Err(); err != nil {
		return nil, err
	}
	raw, err := gen.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	m["$id"] = JSONSchemaID
	m["title"] = "hal9-migrate MigrationPlan (migrate.hal9.ai/v1)"
	m["description"] = "A hal9-migrate MigrationPlan, generated from schema/plan.cue by go run ./schema/gen. " +
		"hal9-migrate plan vet checks more than this schema can say."
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
