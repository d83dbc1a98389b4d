// Package schema embeds the CUE definition of a MigrationPlan. It holds the
// rules only; loading plan files and turning CUE errors into messages with
// positions is the plan package's job.
package schema

import (
	_ "embed"
	"sync"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"
)

// Source is the text of plan.cue, the schema every plan is validated against.
//
//go:embed plan.cue
var Source []byte

// Filename is the name the schema's positions are reported under.
const Filename = "schema/plan.cue"

// Definition is the path of the plan definition inside the schema.
const Definition = "#Plan"

var parsed = sync.OnceValues(func() (*ast.File, error) {
	return parser.ParseFile(Filename, Source, parser.ParseComments)
})

// File returns the parsed schema. It is parsed once per process; callers
// build it into their own cue.Context and must not modify it.
func File() (*ast.File, error) { return parsed() }
