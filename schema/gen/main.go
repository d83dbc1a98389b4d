// Command gen writes schema/v1/plan.schema.json, the JSON Schema of a
// MigrationPlan, from the CUE schema (schema/plan.cue), for editors and
// other tools that read JSON Schema (the YAML language server among them).
// Run it from the repository's root, or through go generate ./schema:
//
//	go run ./schema/gen            # writes schema/v1/plan.schema.json
//	go run ./schema/gen -o -       # prints it
//
// The schema's $id names the plan format's version (v1, as apiVersion
// migrate.hal9.ai/v1); a test fails when the committed file is stale.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/hal9ai/hal9-migrate/schema"
)

func main() {
	out := flag.String("o", "schema/v1/plan.schema.json", "where to write the JSON Schema (- for stdout)")
	flag.Parse()
	b, err := schema.JSONSchema()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	if *out == "-" {
		_, err = os.Stdout.Write(b)
	} else {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
