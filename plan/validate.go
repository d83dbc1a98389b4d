package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/token"
	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/schema"
)

// Source is the content of one plan file.
type Source struct {
	// Path names the file in errors and in Plan.File.
	Path string
	Data []byte
	// Discovered marks a file found by walking a directory rather than named
	// by the user. A discovered file whose kind is set to something other
	// than MigrationPlan (a status file, a Kustomization) is skipped.
	Discovered bool
	// Size is the file's size in bytes when a reader left Data empty
	// because the file is larger than it would read (a plan over the
	// per-file limit is refused by its size, never loaded), or because
	// its reader knows the caller has it (Blob); 0 otherwise.
	Size int64
	// Blob, when not empty, names the content as its reader knows it
	// without hashing it (a Git blob id): two sources of one path and
	// one Blob hold the same bytes. A Cache trusts it.
	Blob string
}

// Set is the result of loading plan files: the valid plans, sorted by name,
// and every problem found. A plan with any error is left out of Plans, so a
// caller never acts on half of a plan.
type Set struct {
	Plans  []*Plan
	Files  int
	Errors Errors

	// related are the plans valid on their own, before Relations left
	// out those that break a group or a gate; claimed every plan name a
	// file claims, valid or not.
	related []*Plan
	claimed []string
}

// Lookup returns the plan named name, or nil.
func (s *Set) Lookup(name string) *Plan {
	for _, p := range s.Plans {
		if p.Metadata.Name == name {
			return p
		}
	}
	return nil
}

// recycleAfter is how many plans one cue.Context evaluates before it is
// dropped. A context keeps everything it ever evaluated, so a long-running
// process that reuses one forever grows without bound.
const recycleAfter = 256

// Validator loads and validates plans. It is safe for concurrent use and
// meant to be kept for the life of a process: the schema is parsed once, and
// the worker processes that evaluate CUE (sandbox.go) are kept between
// calls; in them, CUE contexts are reused and replaced periodically.
type Validator struct {
	schema *ast.File
	quick  *compiled
	pool   chan *evaluator
	limits Limits
	// sandbox evaluates the plans that need CUE, in worker processes;
	// a local Validator (the workers' own) evaluates them itself.
	sandbox *sandbox
	local   bool
}

// evaluator is one cue.Context with the schema built into it. A context is
// not safe for concurrent use, so each goroutine takes its own from the pool.
type evaluator struct {
	ctx    *cue.Context
	schema cue.Value
	uses   int
}

// NewValidator returns a Validator for the embedded schema, applying
// DefaultLimits unless an option says otherwise.
func NewValidator(opts ...ValidatorOption) (*Validator, error) {
	f, err := schema.File()
	if err != nil {
		return nil, fmt.Errorf("parse embedded schema: %w", err)
	}
	v := &Validator{schema: f, quick: compileSchema(f, schema.Definition), pool: make(chan *evaluator, runtime.GOMAXPROCS(0)),
		limits: DefaultLimits()}
	for _, o := range opts {
		o(v)
	}
	if err := v.limits.Check(); err != nil {
		return nil, err
	}
	if !v.local {
		v.sandbox = newSandbox(v.limits)
	}
	e, err := v.newEvaluator()
	if err != nil {
		return nil, err
	}
	v.put(e)
	return v, nil
}

// Close stops the worker processes that wait for plans to evaluate, and
// waits until they have exited. They also exit on their own after some
// idle seconds, and with the process; Close is for a program that wants
// them gone (and counted in its resource usage) before it exits. The
// Validator remains usable: it starts workers again when it needs them.
func (v *Validator) Close() {
	if v.sandbox != nil {
		v.sandbox.close()
	}
}

func (v *Validator) newEvaluator() (*evaluator, error) {
	ctx := cuecontext.New()
	root := ctx.BuildFile(v.schema)
	def := root.LookupPath(cue.ParsePath(schema.Definition))
	if !def.Exists() {
		return nil, fmt.Errorf("embedded schema has no %s: %w", schema.Definition, root.Err())
	}
	return &evaluator{ctx: ctx, schema: def}, nil
}

func (v *Validator) get() *evaluator {
	select {
	case e := <-v.pool:
		return e
	default:
	}
	e, err := v.newEvaluator()
	if err != nil {
		// NewValidator built the same schema successfully; failing now
		// means memory corruption or a bug in CUE.
		panic(err)
	}
	return e
}

func (v *Validator) put(e *evaluator) {
	if e.uses >= recycleAfter {
		return
	}
	select {
	case v.pool <- e:
	default:
	}
}

// Load reads plan files and directory trees and validates them. Directories
// are walked for .yaml, .yml, .json and .cue files, skipping hidden
// directories. Files are measured before they are read: one the limits
// refuse by its size is not read at all. The error, when not nil, is the
// Set's Errors.
func (v *Validator) Load(paths ...string) (*Set, error) {
	var found []Source
	var errs Errors
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			errs = append(errs, Error{File: p, Message: ioMessage(err)})
			continue
		}
		if !info.IsDir() {
			found = append(found, Source{Path: p, Size: info.Size()})
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				errs = append(errs, Error{File: path, Message: ioMessage(err)})
				return nil
			}
			if d.IsDir() {
				if path != p && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				return nil
			}
			if FormatOf(path) == "" {
				return nil
			}
			info, err := os.Stat(path) // a link's target, as reading it would
			if err != nil {
				errs = append(errs, Error{File: path, Message: ioMessage(err)})
				return nil
			}
			found = append(found, Source{Path: path, Size: info.Size(), Discovered: true})
			return nil
		})
		if err != nil {
			errs = append(errs, Error{File: p, Message: ioMessage(err)})
		}
	}
	// Read what the limits let through; Validate refuses the rest by the
	// size recorded here, with the same verdicts.
	refused := v.limits.refuseBySize(found, true)
	sources := found[:0]
	for i, src := range found {
		if _, ok := refused[i]; !ok {
			data, err := readAtMost(src.Path, src.Size, int64(v.limits.MaxFileSize))
			if err != nil {
				errs = append(errs, Error{File: src.Path, Message: ioMessage(err)})
				continue
			}
			if int64(len(data)) <= int64(v.limits.MaxFileSize) {
				src.Data, src.Size = data, 0
			} else {
				src.Size = int64(len(data)) // it grew since it was measured
			}
		}
		sources = append(sources, src)
	}
	set := v.Validate(sources)
	set.Errors = append(set.Errors, errs...).sort()
	return set, set.Errors.Err()
}

// readAtMost reads a file of size bytes, as Load measured it, or its first
// limit+1 bytes when it is longer.
func readAtMost(path string, size, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One more byte than expected, to see the end of the file at once.
	data := make([]byte, 0, min(size, limit)+1)
	for int64(len(data)) <= limit {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := f.Read(data[len(data):min(int64(cap(data)), limit+1)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
	}
	return data, nil
}

func ioMessage(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return "cannot read: " + err.Error()
}

// Validate checks sources concurrently and returns the valid plans and all
// errors, sorted.
func (v *Validator) Validate(sources []Source) *Set {
	return v.ValidateCached(nil, sources)
}

// checked is the outcome of checking one file on its own.
type checked struct {
	plan    *Plan
	skipped bool
	errs    Errors
}

// ValidateCached is Validate, taking from c the outcome of each file
// checked before with the same path and content, and keeping in c the
// outcome of the others: only the files that changed are parsed again.
// What relates the files to each other (names used twice, groups, gates)
// is checked over all of them, every call. c forgets the files sources no
// longer hold. A nil c caches nothing.
func (v *Validator) ValidateCached(c *Cache, sources []Source) *Set {
	results := make([]checked, len(sources))
	refused := v.limits.refuseBySize(sources, c != nil)
	var keys []string
	var todo []int
	if c != nil {
		keys = make([]string, len(sources))
		c.mu.Lock()
		for i, src := range sources {
			if _, ok := refused[i]; ok {
				continue
			}
			keys[i] = cacheKey(src)
			if e, ok := c.entries[src.Path]; ok && e.key == keys[i] {
				results[i] = e.checked
				continue
			}
			if len(src.Data) == 0 && src.Size > 0 {
				// Left unread, and not in the cache: as Validate
				// would, refuse it rather than guess.
				refused[i] = limitError(src.Path, "maxFileSize", "not read: %s is over the limit for one plan file of the reader that loaded it", ByteSize(src.Size))
				continue
			}
			todo = append(todo, i)
		}
		c.mu.Unlock()
	} else {
		for i := range sources {
			if _, ok := refused[i]; !ok {
				todo = append(todo, i)
			}
		}
	}
	for i, e := range refused {
		results[i].errs = Errors{e}
	}
	workers := min(runtime.GOMAXPROCS(0), len(todo))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				p, skipped, errs := v.check(sources[i])
				results[i] = checked{p, skipped, errs}
			}
		})
	}
	for _, i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
	if c != nil {
		c.update(sources, keys, todo, results)
	}

	set := &Set{}
	byName := map[string]*Plan{}
	dropped := map[string]bool{}
	for _, r := range results {
		if r.skipped {
			continue
		}
		set.Files++
		set.Errors = append(set.Errors, r.errs...)
		// A broken plan still claims its name: two files with one name
		// are an error whichever of them is broken.
		if r.plan == nil || r.plan.Metadata.Name == "" {
			continue
		}
		name := r.plan.Metadata.Name
		if first, ok := byName[name]; ok {
			line, col := r.plan.namePos()
			fl, fc := first.namePos()
			set.Errors = append(set.Errors, Error{File: r.plan.File, Line: line, Column: col, Path: "metadata.name",
				Message: fmt.Sprintf("duplicate plan name %q (also used by %s:%d:%d)", name, first.File, fl, fc)})
			dropped[name] = true
			continue
		}
		byName[name] = r.plan
		if len(r.errs) == 0 {
			set.Plans = append(set.Plans, r.plan)
		}
	}
	set.Plans = slices.DeleteFunc(set.Plans, func(p *Plan) bool { return dropped[p.Metadata.Name] })
	slices.SortFunc(set.Plans, func(a, b *Plan) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	// Groups and gates relate plans to each other: a plan that breaks
	// them is as invalid as one that breaks the schema, so that a daemon
	// keeps its last good version.
	set.related = set.Plans
	for name := range byName {
		set.claimed = append(set.claimed, name)
	}
	if rel := Relations(set.Plans); len(rel) > 0 {
		bad := map[string]bool{}
		for _, e := range rel {
			bad[e.File] = true
		}
		set.Plans = slices.DeleteFunc(slices.Clone(set.Plans), func(p *Plan) bool { return bad[p.File] })
		set.Errors = append(set.Errors, rel...)
	}
	set.Errors = set.Errors.sort()
	return set
}

// ValidateOne checks a single file and returns its plan or its errors.
func (v *Validator) ValidateOne(src Source) (*Plan, error) {
	if e, ok := v.limits.refuseBySize([]Source{src}, false)[0]; ok {
		return nil, Errors{e}
	}
	p, _, errs := v.check(src)
	if len(errs) > 0 {
		return nil, errs.sort()
	}
	return p, nil
}

// check parses, evaluates and decodes one file. With errors it may still
// return the plan as far as it could be decoded; the plan is valid only when
// errs is empty.
//
// Reading the file is bounded by its size and the node budget, and so is
// the compiled check that proves most plans valid. Everything else goes
// through CUE, whose evaluation cannot be interrupted, and whose cost grows
// faster than the data (one error among 50,000 feature flags takes it 9 s,
// an error in each of them minutes): unless the Validator is local, that
// happens in the sandbox, under a deadline and a memory budget.
func (v *Validator) check(src Source) (p *Plan, skipped bool, errs Errors) {
	doc, skipped, errs := v.read(src)
	if doc == nil {
		return nil, skipped, errs
	}
	// Most plans are valid: prove it in Go when the compiled schema can, and
	// leave the rest (and every error message) to CUE.
	if value, ok := doc.plain(); ok && v.quick.accepts(value) {
		return doc.decode(src.Path, value)
	}
	if v.sandbox != nil {
		return v.sandbox.check(src)
	}
	return v.evaluate(doc)
}

// read parses one file, judges its apiVersion and kind, and expands a YAML
// file's aliases. It returns a document only when there is one to evaluate.
func (v *Validator) read(src Source) (doc *document, skipped bool, errs Errors) {
	format := FormatOf(src.Path)
	switch format {
	case FormatYAML:
		doc, errs = parseYAMLTree(src.Path, src.Data)
	case FormatJSON, FormatCUE:
		doc, errs = parseCUE(src.Path, src.Data, format)
	default:
		return nil, false, Errors{{File: src.Path, Message: "unknown file type (expected .yaml, .yml, .json or .cue)"}}
	}
	if doc == nil || len(errs) > 0 {
		return nil, false, errs
	}
	// What the file says it is decides, before anything is expanded or
	// evaluated, whether it is read further.
	apiVersion, kind := doc.envelope()
	if src.Discovered && kind.ok && kind.value != Kind {
		return nil, true, nil
	}
	if errs := doc.envelopeErrors(apiVersion, kind); len(errs) > 0 {
		return nil, false, errs
	}
	if doc.node != nil {
		if errs := doc.expandYAML(v.limits.MaxNodes); len(errs) > 0 {
			return nil, false, errs
		}
	}
	return doc, false, nil
}

// evaluate validates a document with CUE, in this process.
func (v *Validator) evaluate(doc *document) (p *Plan, skipped bool, errs Errors) {
	e := v.get()
	defer v.put(e)
	e.uses++
	data := doc.build(e.ctx)
	if err := data.Err(); err != nil {
		return nil, false, fromCUEErrors(doc.file, err, "")
	}
	unified := e.schema.Unify(data)
	if schemaErr := unified.Validate(cue.Concrete(true)); schemaErr != nil {
		errs = v.translate(e, doc, data, schemaErr)
		partial, rules := doc.salvage(doc.file, data, errs)
		return partial, false, append(errs, rules...)
	}
	var concrete any
	if err := unified.Decode(&concrete); err != nil {
		return nil, false, Errors{{File: doc.file, Line: 1, Column: 1, Message: "decode: " + err.Error()}}
	}
	return doc.decode(doc.file, concrete)
}

// decode turns a valid plan's plain value into a Plan and applies the rules
// that relate its fields.
func (d *document) decode(file string, value any) (*Plan, bool, Errors) {
	p := &Plan{File: file, positions: make(map[string][2]int, len(keptPositions))}
	d.remember(p, keptPositions)
	// A YAML plan is decoded from its node tree, a third faster than from
	// its plain value through JSON. The decoder follows aliases again, but
	// within the budget: decode runs only on a plan whose expansion stayed
	// within it, and the decoder visits no more than the expansion did
	// (a valid plan has no field that Plan lacks, and those it would skip).
	var err error
	if d.node != nil {
		err = d.node.Decode(p)
	} else {
		var b []byte
		if b, err = json.Marshal(value); err == nil {
			err = json.Unmarshal(b, p)
		}
	}
	if err != nil {
		return nil, false, Errors{{File: file, Line: 1, Column: 1, Message: "decode: " + err.Error()}}
	}
	// The fields that relate plans to each other, which Relations points
	// at across files.
	d.remember(p, p.relationPaths())
	var errs Errors
	for _, r := range checkRules(p) {
		errs = append(errs, d.errorAt(r.path, false, r.msg))
	}
	if len(errs) > 0 {
		return p, false, errs
	}
	return p, false, nil
}

// remember keeps in p where the fields at paths are in the file: a
// scalar's value, a mapping's or list's key.
func (d *document) remember(p *Plan, paths []string) {
	for _, path := range paths {
		parts := strings.Split(path, ".")
		if sp := d.locate(parts); sp.depth == len(parts) {
			at := sp.value
			if sp.collection {
				at = sp.key
			}
			p.positions[path] = at
		}
	}
}

// salvage decodes a plan the schema rejected as far as it goes, so that one
// run reports the rules that relate fields (a target naming no phase) along
// with the schema's errors, and so that a plan name used twice is found even
// in a broken file. Values the schema rejected are dropped before decoding,
// except names, whose text is what other fields refer to whatever the schema
// thinks of its form, and mappings the schema judged as a whole; a rule that
// read a dropped value, or is about a rejected field, is not reported.
func (d *document) salvage(file string, data cue.Value, schemaErrs Errors) (*Plan, Errors) {
	value, ok := d.plain()
	if !ok {
		if err := data.Decode(&value); err != nil {
			return nil, nil
		}
	}
	var rejected []rejection
	for _, e := range schemaErrs {
		r := rejection{path: nil}
		if e.Path != "" {
			r.path = strings.Split(e.Path, ".")
		}
		switch valueAt(value, r.path).(type) {
		case string:
			r.kept = isReference(r.path)
		case map[string]any:
			// A complaint about a whole mapping ("a phase needs one
			// of steps, mirror or run") leaves the fields inside it
			// as they are; one about its kind does not.
			r.whole = !strings.HasPrefix(e.Message, "invalid value")
		}
		if !r.kept && !r.whole {
			value = without(value, r.path)
		}
		rejected = append(rejected, r)
	}
	p := &Plan{File: file, positions: map[string][2]int{}}
	b, err := json.Marshal(value)
	if err != nil || json.Unmarshal(b, p) != nil {
		return nil, nil
	}
	for _, path := range [][]string{{"metadata", "name"}} {
		if sp := d.locate(path); sp.depth == len(path) {
			p.positions[strings.Join(path, ".")] = sp.value
		}
	}
	var errs Errors
	for _, r := range checkRules(p) {
		if !r.tainted(rejected) {
			errs = append(errs, d.errorAt(r.path, false, r.msg))
		}
	}
	return p, errs
}

// isReference reports whether path is a name other fields refer to, or a
// reference to one.
func isReference(path []string) bool {
	switch {
	case len(path) == 2 && path[0] == "metadata" && path[1] == "name",
		len(path) == 3 && path[0] == "spec" && path[1] == "target" && path[2] == "phase",
		len(path) == 3 && path[0] == "spec" && path[1] == "rollback" && path[2] == "to",
		len(path) == 4 && path[0] == "spec" && path[1] == "phases" && (path[3] == "name" || path[3] == "checkpoint"),
		len(path) == 5 && path[0] == "spec" && path[1] == "phases" && path[3] == "verify":
		return true
	}
	return false
}

// valueAt returns the plain value at path, or nil.
func valueAt(v any, path []string) any {
	for _, k := range path {
		switch c := v.(type) {
		case map[string]any:
			v = c[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

// without returns v with the value at path removed: a key deleted from its
// mapping, an item of a list set to null so that the indices after it keep
// their meaning. It copies what it changes and leaves v as it was.
func without(v any, path []string) any {
	if len(path) == 0 {
		return nil
	}
	switch c := v.(type) {
	case map[string]any:
		inner, ok := c[path[0]]
		if !ok {
			return v
		}
		out := make(map[string]any, len(c))
		for k, x := range c {
			out[k] = x
		}
		if len(path) == 1 {
			delete(out, path[0])
		} else {
			out[path[0]] = without(inner, path[1:])
		}
		return out
	case []any:
		i, err := strconv.Atoi(path[0])
		if err != nil || i < 0 || i >= len(c) {
			return v
		}
		out := slices.Clone(c)
		if len(path) == 1 {
			out[i] = nil
		} else {
			out[i] = without(c[i], path[1:])
		}
		return out
	}
	return v
}

// plain returns the document as plain Go values, if it is literal data.
func (d *document) plain() (any, bool) {
	if d.node != nil {
		return d.value, true
	}
	return literalData(d.syntax)
}

// errorAt places msg at path in the file: at the value of a scalar field,
// at the key of a mapping or list, of a field named by key, and of the
// nearest enclosing field when path is not all there (a missing field).
func (d *document) errorAt(path []string, key bool, msg string) Error {
	sp := d.locate(path)
	at := sp.value
	if key || sp.collection || sp.depth < len(path) {
		at = sp.key
	}
	return Error{File: d.file, Line: at[0], Column: at[1], Path: strings.Join(path, "."), Message: msg}
}

// literalField is a top-level field of a plan file written as a plain
// string, read from the file's syntax without evaluating or expanding it.
type literalField struct {
	value     string
	line, col int
	ok        bool
}

// envelope returns the apiVersion and kind the file declares as plain
// strings, if it does. Reading them costs nothing however large the rest of
// the file would be once expanded or evaluated.
func (d *document) envelope() (apiVersion, kind literalField) {
	fields := map[string]*literalField{"apiVersion": &apiVersion, "kind": &kind}
	if d.node != nil {
		if d.node.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(d.node.Content); i += 2 {
			k, at := d.node.Content[i], d.node.Content[i+1]
			f := fields[k.Value]
			if k.Kind != yaml.ScalarNode || f == nil || f.ok {
				continue
			}
			v := at
			for v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str" {
				*f = literalField{value: v.Value, line: at.Line, col: at.Column, ok: true}
			}
		}
		return
	}
	for _, decl := range topLevel(d.syntax) {
		field, ok := decl.(*ast.Field)
		if !ok {
			continue
		}
		name, _, _ := ast.LabelName(field.Label)
		f := fields[name]
		lit, isLit := field.Value.(*ast.BasicLit)
		if f == nil || f.ok || !isLit {
			continue
		}
		if s, err := literal.Unquote(lit.Value); err == nil && lit.Kind == token.STRING {
			p := lit.Pos()
			*f = literalField{value: s, line: p.Line(), col: p.Column(), ok: true}
		}
	}
	return
}

// envelopeErrors reports an apiVersion or kind written as another string
// than a plan's: such a file is no plan, and nothing more of it is read.
func (d *document) envelopeErrors(apiVersion, kind literalField) Errors {
	var errs Errors
	for _, f := range []struct {
		path string
		got  literalField
		want string
	}{{"apiVersion", apiVersion, APIVersion}, {"kind", kind, Kind}} {
		if f.got.ok && f.got.value != f.want {
			errs = append(errs, Error{File: d.file, Line: f.got.line, Column: f.got.col, Path: f.path,
				Message: fmt.Sprintf("invalid value %s (expected %q)", shorten(literal.String.Quote(f.got.value)), f.want)})
		}
	}
	return errs
}

// translate turns the schema's errors into Errors that name the offending
// field in the plan file and say what was expected.
func (v *Validator) translate(e *evaluator, doc *document, data cue.Value, err error) Errors {
	var errs Errors
	structLevel := map[int]bool{} // indices of rule errors about a whole struct
	for _, ce := range cueerrors.Errors(err) {
		path := cleanPath(ce.Path())
		if path == nil && len(ce.Path()) > 0 {
			continue // an error inside a hidden helper field, reported elsewhere
		}
		format, args := ce.Msg()
		msg := fmt.Sprintf(format, args...)
		var out string
		key := false
		switch {
		case isUserError(ce):
			out = msg
			if ce.Path()[len(ce.Path())-1] == "_at" {
				structLevel[len(errs)] = true
				key = true
			}
		case strings.Contains(format, "field is required but not present"):
			out = "missing required field" + v.expectation(e.schema, path)
		case strings.Contains(format, "field not allowed"):
			path = unknownPrefix(e.schema, path)
			out, key = unknownField(e.schema, path), true
		case strings.Contains(format, "errors in empty disjunction"):
			continue // each alternative's error is reported on its own
		case strings.Contains(format, "incompatible list lengths"):
			out = "invalid value " + dataString(data, path) + " (expected at least one item)"
		case data.LookupPath(cuePath(path)).Exists():
			out = "invalid value " + dataString(data, path) + v.expectation(e.schema, path)
		default:
			out = msg
		}
		errs = append(errs, doc.errorAt(path, key, out))
	}
	// CUE leaves out "field not allowed" for a struct that has other errors,
	// so look for unknown fields ourselves.
	for _, path := range unknownFields(v.quick, e.schema, data, nil) {
		errs = append(errs, doc.errorAt(path, true, unknownField(e.schema, path)))
	}
	// Likewise it leaves out missing required fields when there is a
	// conflict elsewhere.
	if value, ok := doc.plain(); ok {
		for _, path := range v.quick.root.missing(value, nil) {
			errs = append(errs, doc.errorAt(path, true, "missing required field"+v.expectation(e.schema, path)))
		}
	}
	// A complaint about a whole struct ("a phase needs one of steps, mirror
	// or run") is usually caused by an invalid field inside it; report only
	// the field's error then.
	var kept Errors
	for i, er := range errs {
		if structLevel[i] && slices.ContainsFunc(errs, func(o Error) bool {
			return strings.HasPrefix(o.Path, er.Path+".")
		}) {
			continue
		}
		kept = append(kept, er)
	}
	if len(kept) == 0 {
		// A value the file leaves open (a CUE "name: string") can fail
		// inside the schema's own helpers, whose errors name no field of
		// the plan: name the open values instead.
		for _, path := range openValues(data, nil) {
			kept = append(kept, doc.errorAt(path, false, "incomplete value "+dataString(data, path)+v.expectation(e.schema, path)))
		}
	}
	if len(kept) == 0 {
		// Validation failed without an error we can place: report it whole
		// rather than accept the plan.
		kept = append(kept, Error{File: doc.file, Line: 1, Column: 1, Message: err.Error()})
	}
	return kept
}

// openValues returns the paths of the scalar values in v that are not
// concrete (a type or a constraint rather than a value).
func openValues(v cue.Value, path []string) [][]string {
	var out [][]string
	switch v.IncompleteKind() {
	case cue.StructKind:
		it, err := v.Fields()
		if err != nil {
			return nil
		}
		for it.Next() {
			out = append(out, openValues(it.Value(), append(slices.Clip(path), it.Selector().Unquoted()))...)
		}
	case cue.ListKind:
		it, err := v.List()
		if err != nil {
			return nil
		}
		for i := 0; it.Next(); i++ {
			out = append(out, openValues(it.Value(), append(slices.Clip(path), strconv.Itoa(i)))...)
		}
	default:
		if !v.IsConcrete() {
			out = append(out, path)
		}
	}
	return out
}

// unknownFields walks the plan's own value and returns the paths of fields
// the schema does not declare.
func unknownFields(quick *compiled, def cue.Value, v cue.Value, path []string) [][]string {
	var out [][]string
	// Where the schema wants another kind here (a list written as a
	// mapping), CUE reports the kind; the fields inside are not unknown.
	want := quick.kindAt(path)
	if v.IncompleteKind() == cue.StructKind && want != 0 && want&kindStruct == 0 ||
		v.IncompleteKind() == cue.ListKind && want != 0 && want&kindList == 0 {
		return nil
	}
	switch v.IncompleteKind() {
	case cue.StructKind:
		it, err := v.Fields(cue.Optional(true))
		if err != nil {
			return nil
		}
		for it.Next() {
			p := append(slices.Clip(path), it.Selector().Unquoted())
			if _, ok := schemaAt(def, p); !ok {
				out = append(out, p)
				continue
			}
			out = append(out, unknownFields(quick, def, it.Value(), p)...)
		}
	case cue.ListKind:
		it, err := v.List()
		if err != nil {
			return nil
		}
		for i := 0; it.Next(); i++ {
			out = append(out, unknownFields(quick, def, it.Value(), append(slices.Clip(path), strconv.Itoa(i)))...)
		}
	}
	return out
}

// unknownPrefix shortens path to its first element the schema does not
// know, so that an unknown field holding a list or mapping is reported once
// rather than for every value inside it.
func unknownPrefix(def cue.Value, path []string) []string {
	for i := 1; i <= len(path); i++ {
		if _, ok := schemaAt(def, path[:i]); !ok {
			return path[:i]
		}
	}
	return path
}

// isUserError reports whether ce was raised by the schema's own error("...")
// rules, whose messages are already written for people.
func isUserError(ce cueerrors.Error) bool {
	for _, p := range ce.Path() {
		if p == "_at" {
			return true
		}
	}
	return false
}

// cleanPath maps a CUE error path to the field path in the plan file: the
// part below a hidden `_at` field continues the path of the struct holding it,
// and quoted labels are unquoted. It returns nil for errors inside other
// hidden fields.
func cleanPath(path []string) []string {
	out := make([]string, 0, len(path))
	for _, p := range path {
		if p == "_at" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "_") {
			return nil
		}
		if uq, err := strconv.Unquote(p); err == nil {
			p = uq
		}
		out = append(out, p)
	}
	return out
}

// dataString renders the plan's own value at path, as CUE writes it but
// only as far as a message shows (60 bytes): a file can nest mappings and
// lists thousands deep, and formatting such a value whole (fmt.Sprint
// indents every level) took 13 s and 600 MiB for a 50 KB YAML file.
func dataString(data cue.Value, path []string) string {
	v := data.LookupPath(cuePath(path))
	if !v.Exists() {
		return ""
	}
	var b strings.Builder
	writeValue(&b, v, true)
	return shorten(b.String())
}

// writeValue writes v to b, stopping once b is longer than a message shows.
// A non-empty mapping is "(a mapping)" on its own and "{...}" in a list.
func writeValue(b *strings.Builder, v cue.Value, top bool) {
	switch v.IncompleteKind() {
	case cue.StructKind:
		if it, err := v.Fields(); err == nil && !it.Next() {
			b.WriteString("{}")
		} else if top {
			b.WriteString("(a mapping)")
		} else {
			b.WriteString("{...}")
		}
		return
	case cue.ListKind:
		if it, err := v.List(); err == nil {
			b.WriteString("[")
			for i := 0; it.Next(); i++ {
				if i > 0 {
					b.WriteString(", ")
				}
				if b.Len() > 60 {
					b.WriteString("...")
					break
				}
				writeValue(b, it.Value(), false)
			}
			b.WriteString("]")
			return
		}
	}
	s := fmt.Sprint(v)
	if v.Kind() == cue.FloatKind {
		// A YAML or JSON number reaches CUE as a float, which CUE
		// prints in exponent form (10.0 as 1e+1): write it as a person
		// would, keeping the ".0" that makes it no integer.
		if f, err := v.Float64(); err == nil && math.Abs(f) < 1e15 {
			if f == math.Trunc(f) {
				s = strconv.FormatFloat(f, 'f', 1, 64)
			} else {
				s = strconv.FormatFloat(f, 'f', -1, 64)
			}
		}
	}
	if strings.Contains(s, "\n") {
		s = strings.Join(strings.Fields(s), " ")
	}
	b.WriteString(s)
}

// shorten cuts a value written in a message to 60 bytes, keeping the quote
// that closes a string.
func shorten(s string) string {
	if len(s) > 60 {
		if strings.HasPrefix(s, `"`) {
			return s[:56] + `..."`
		}
		s = s[:57] + "..."
	}
	return s
}

// cuePath builds a cue.Path from field names and list indices.
func cuePath(path []string) cue.Path {
	sels := make([]cue.Selector, len(path))
	for i, p := range path {
		if n, err := strconv.Atoi(p); err == nil {
			sels[i] = cue.Index(n)
		} else {
			sels[i] = cue.Str(p)
		}
	}
	return cue.MakePath(sels...)
}

// schemaAt returns the schema's constraint for the plan field at path,
// following list elements and map patterns.
func schemaAt(def cue.Value, path []string) (cue.Value, bool) {
	v := def
	for _, p := range path {
		var next cue.Value
		if n, err := strconv.Atoi(p); err == nil {
			// Try the element itself, then the list's element constraint;
			// [T, ...T] has no AnyIndex element but its first is T.
			for _, sel := range []cue.Selector{cue.Index(n), cue.AnyIndex, cue.Index(0)} {
				if next = v.LookupPath(cue.MakePath(sel)); next.Exists() {
					break
				}
			}
		} else {
			// A required or optional field, or else a pattern constraint.
			next = v.LookupPath(cue.MakePath(cue.Str(p).Optional()))
			if !next.Exists() {
				next = v.LookupPath(cue.MakePath(cue.AnyString))
			}
		}
		if !next.Exists() {
			return next, false
		}
		v = next
	}
	return v, true
}

// expectation describes what the schema expects at path, as " (expected
// ...)", or "" when it has nothing useful to say. Where CUE's own value is an
// error (a definition whose rules fire when it stands alone), the kinds of
// the compiled schema speak instead.
func (v *Validator) expectation(def cue.Value, path []string) string {
	if s, ok := schemaAt(def, path); ok && s.Err() == nil && s.IncompleteKind() != cue.BottomKind {
		if d := describe(s); d != "" {
			return " (expected " + d + ")"
		}
	}
	if k := v.quick.kindAt(path); k != 0 {
		return " (expected " + kindWords(k) + ")"
	}
	return ""
}

// unknownField says that the field at path is not part of the schema and
// which fields are.
func unknownField(def cue.Value, path []string) string {
	name := path[len(path)-1]
	parent, ok := schemaAt(def, path[:len(path)-1])
	if !ok {
		return fmt.Sprintf("unknown field %q", name)
	}
	var allowed []string
	it, err := parent.Fields(cue.Optional(true))
	if err == nil {
		for it.Next() {
			if it.Selector().IsString() {
				allowed = append(allowed, it.Selector().Unquoted())
			}
		}
	}
	if len(allowed) == 0 {
		return fmt.Sprintf("unknown field %q", name)
	}
	msg := fmt.Sprintf("unknown field %q", name)
	if s := closest(name, allowed); s != "" {
		msg += fmt.Sprintf(", did you mean %q?", s)
	}
	return msg + " (expected one of " + strings.Join(allowed, ", ") + ")"
}
