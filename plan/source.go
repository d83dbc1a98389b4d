package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
	"gopkg.in/yaml.v3"
)

// Format is the syntax of a plan file, chosen by its extension.
type Format string

// The plan file formats.
const (
	FormatYAML Format = "yaml"
	FormatJSON Format = "json"
	FormatCUE  Format = "cue"
)

// FormatOf returns the format of a file by its extension, or "" when the file
// is not a plan file.
func FormatOf(name string) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return FormatYAML
	case ".json":
		return FormatJSON
	case ".cue":
		return FormatCUE
	}
	return ""
}

// document is one parsed plan file. A YAML file keeps its node tree, from
// which positions are read only when there is an error to report; JSON and CUE
// files are parsed by CUE and keep their syntax tree.
type document struct {
	file   string
	format Format
	node   *yaml.Node // YAML: the root mapping
	value  any        // YAML: the plain Go value given to CUE
	syntax *ast.File  // JSON and CUE
}

// parseYAML parses one YAML document into a node tree and expands it into
// a plain value within maxNodes (see expandYAML).
func parseYAML(file string, data []byte, maxNodes int) (*document, Errors) {
	doc, errs := parseYAMLTree(file, data)
	if doc == nil {
		return nil, errs
	}
	if errs := doc.expandYAML(maxNodes); len(errs) > 0 {
		return nil, errs
	}
	return doc, nil
}

// parseYAMLTree parses one YAML document into a node tree, whose size is
// that of the file: aliases stay references to their anchors, and nothing
// is expanded yet.
func parseYAMLTree(file string, data []byte) (*document, Errors) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if err.Error() == "EOF" {
			return nil, Errors{{File: file, Line: 1, Column: 1, Message: "empty file (expected a MigrationPlan)"}}
		}
		return nil, Errors{yamlError(file, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{File: file, Line: extra.Line, Column: extra.Column,
			Message: "more than one YAML document (expected one plan per file)"}}
	} else if err.Error() != "EOF" {
		return nil, Errors{yamlError(file, err)}
	}
	doc := &document{file: file, format: FormatYAML, node: &root}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		doc.node = root.Content[0]
	}
	return doc, nil
}

// expandYAML sets the document's plain value from its node tree, making at
// most maxNodes values. When the budget runs out the only error is that.
func (d *document) expandYAML(maxNodes int) Errors {
	var errs Errors
	x := &expander{left: maxNodes, report: func(n *yaml.Node, path []string, msg string) {
		errs = append(errs, Error{File: d.file, Line: n.Line, Column: n.Column, Path: strings.Join(path, "."), Message: msg})
	}}
	d.value = x.value(d.node, nil)
	if x.over != nil {
		d.value = nil
		what := fmt.Sprintf("YAML document has more than %d nodes", maxNodes)
		if x.overAlias {
			what = fmt.Sprintf("YAML aliases expand past %d nodes", maxNodes)
		}
		e := limitError(d.file, "maxNodes", "%s", what)
		e.Line, e.Column, e.Path = x.over.Line, x.over.Column, strings.Join(x.overPath, ".")
		return Errors{e}
	}
	return errs
}

// expander converts a node tree into maps, slices and scalars, following
// aliases and merge keys the way a YAML decoder does, within a budget: each
// node it visits costs one, so an alias costs as much as the copy it makes.
// A file of nested aliases (nine levels of ten aliases, a "billion laughs")
// or of merge keys that merge the same mappings again and again stops at
// the budget, where a decoder would try to build billions of values.
type expander struct {
	left   int
	report func(n *yaml.Node, path []string, msg string)

	// alias is the outermost alias being expanded, and aliasPath where
	// it is.
	alias     *yaml.Node
	aliasPath []string
	// over is where the budget ran out: the outermost alias being
	// expanded then, else the node that was one too many.
	over      *yaml.Node
	overPath  []string
	overAlias bool
}

// spend takes one node from the budget, and reports whether there was one.
func (x *expander) spend(n *yaml.Node, path []string) bool {
	if x.over != nil {
		return false
	}
	if x.left <= 0 {
		x.over, x.overPath = n, slices.Clone(path)
		if x.alias != nil {
			x.over, x.overPath, x.overAlias = x.alias, x.aliasPath, true
		}
		return false
	}
	x.left--
	return true
}

func (x *expander) value(n *yaml.Node, path []string) any {
	if !x.spend(n, path) {
		return nil
	}
	switch n.Kind {
	case yaml.AliasNode:
		if x.alias == nil {
			x.alias, x.aliasPath = n, slices.Clone(path)
			defer func() { x.alias = nil }()
		}
		return x.value(n.Alias, path)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		keys := make(map[string]*yaml.Node, len(n.Content)/2)
		var merged []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" {
				merged = append(merged, v)
				continue
			}
			if k.Kind != yaml.ScalarNode || (k.ShortTag() != "!!str" && k.ShortTag() != "!!int" && k.ShortTag() != "!!bool" && k.ShortTag() != "!!float") {
				x.report(k, path, "a mapping key must be a plain string")
				continue
			}
			if first, dup := keys[k.Value]; dup {
				x.report(k, append(path, k.Value), fmt.Sprintf("duplicate key %q (first at line %d)", k.Value, first.Line))
				continue
			}
			keys[k.Value] = k
			m[k.Value] = x.value(v, append(path, k.Value))
		}
		for _, src := range merged {
			x.merge(m, src, path)
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, c := range n.Content {
			l[i] = x.value(c, append(path, strconv.Itoa(i)))
		}
		return l
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			x.report(n, path, err.Error())
			return nil
		}
		return v
	}
	return nil
}

// merge adds the fields of the mapping, or list of mappings, that a merge
// key names to m, where m does not have them.
func (x *expander) merge(m map[string]any, src *yaml.Node, path []string) {
	if !x.spend(src, path) {
		return
	}
	if src.Kind == yaml.AliasNode {
		if x.alias == nil {
			x.alias, x.aliasPath = src, slices.Clone(path)
			defer func() { x.alias = nil }()
		}
		src = src.Alias
	}
	switch src.Kind {
	case yaml.MappingNode:
		sm, _ := x.value(src, path).(map[string]any)
		for k, v := range sm {
			if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
	case yaml.SequenceNode:
		for _, c := range src.Content {
			x.merge(m, c, path)
		}
	default:
		x.report(src, path, "a merge key needs a mapping or a list of mappings")
	}
}

// yamlError turns a parse error from the YAML decoder into an Error. The
// decoder reports positions only inside its message ("yaml: line 3: ...").
func yamlError(file string, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line, msg = n, rest[i+2:]
			}
		}
	}
	if line == 0 {
		line = 1
	}
	return Error{File: file, Line: line, Column: 1, Message: "invalid YAML: " + msg}
}

// parseCUE parses a JSON or CUE file with CUE's parser, which keeps
// positions. JSON is a subset of CUE's syntax, so a .json file must also be
// JSON by encoding/json's judgement: one that is CUE beyond that could
// compute (a comprehension, a reference) where its name promises data.
func parseCUE(file string, data []byte, format Format) (*document, Errors) {
	f, err := parser.ParseFile(file, data, parser.ParseComments)
	if err != nil {
		return nil, fromCUEErrors(file, err, "invalid "+strings.ToUpper(string(format))+": ")
	}
	if !slices.ContainsFunc(f.Decls, func(d ast.Decl) bool {
		switch d.(type) {
		case *ast.Package, *ast.CommentGroup:
			return false
		}
		return true
	}) {
		return nil, Errors{{File: file, Line: 1, Column: 1, Message: "empty file (expected a MigrationPlan)"}}
	}
	if format == FormatJSON {
		if err := notJSON(file, data); err != nil {
			return nil, Errors{*err}
		}
	}
	doc := &document{file: file, format: format, syntax: f}
	if format == FormatJSON {
		// CUE unifies a field given twice; in JSON it is a mistake, as
		// in YAML.
		var errs Errors
		for _, decl := range f.Decls {
			if embed, ok := decl.(*ast.EmbedDecl); ok {
				errs = append(errs, duplicateKeys(file, embed.Expr, nil)...)
			}
		}
		return doc, errs
	}
	return doc, nil
}

// notJSON reports where data stops being JSON, or nil when it is JSON.
func notJSON(file string, data []byte) *Error {
	if json.Valid(data) {
		return nil
	}
	var v any
	err := json.Unmarshal(data, &v)
	if err == nil {
		return nil
	}
	off := len(data)
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		off = int(syntax.Offset) - 1
	}
	off = max(0, min(off, len(data)))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return &Error{File: file, Line: line, Column: col, Message: "invalid JSON: " + err.Error()}
}

// duplicateKeys reports the keys of a JSON object given more than once,
// at each repetition.
func duplicateKeys(file string, e ast.Expr, path []string) Errors {
	var errs Errors
	switch x := e.(type) {
	case *ast.StructLit:
		first := map[string]token.Pos{}
		for _, decl := range x.Elts {
			field, ok := decl.(*ast.Field)
			if !ok {
				continue
			}
			name, _, err := ast.LabelName(field.Label)
			if err != nil {
				continue
			}
			p := field.Label.Pos()
			if at, dup := first[name]; dup {
				errs = append(errs, Error{File: file, Line: p.Line(), Column: p.Column(), Path: strings.Join(append(slices.Clip(path), name), "."),
					Message: fmt.Sprintf("duplicate key %q (first at line %d)", name, at.Line())})
				continue
			}
			first[name] = p
			errs = append(errs, duplicateKeys(file, field.Value, append(slices.Clip(path), name))...)
		}
	case *ast.ListLit:
		for i, el := range x.Elts {
			errs = append(errs, duplicateKeys(file, el, append(slices.Clip(path), strconv.Itoa(i)))...)
		}
	}
	return errs
}

// fromCUEErrors reports CUE errors that carry their own positions (syntax
// errors and errors inside a CUE plan's own expressions).
func fromCUEErrors(file string, err error, prefix string) Errors {
	var errs Errors
	for _, e := range cueerrors.Errors(err) {
		line, col := 1, 1
		for _, p := range cueerrors.Positions(e) {
			if p.Filename() == file {
				line, col = p.Line(), p.Column()
				break
			}
		}
		format, args := e.Msg()
		errs = append(errs, Error{File: file, Line: line, Column: col,
			Path: strings.Join(cleanPath(e.Path()), "."), Message: prefix + fmt.Sprintf(format, args...)})
	}
	return errs
}

// build turns the document into a CUE value in ctx.
func (d *document) build(ctx *cue.Context) cue.Value {
	if d.syntax != nil {
		return ctx.BuildFile(d.syntax)
	}
	return ctx.Encode(d.value)
}

// spot is where a field path was found in a file: the position of its key
// and of its value, and how many elements of the path exist. When the path is
// not all there, both positions are those of the deepest field that is.
type spot struct {
	key, value [2]int // line, column
	depth      int
	collection bool // the value is a mapping or a list
}

// locate finds path in the file.
func (d *document) locate(path []string) spot {
	if d.node != nil {
		return locateYAML(d.node, path)
	}
	return locateCUE(d.syntax, path)
}

// locateYAML follows aliases only along path, one node per element, so it
// never expands one.
func locateYAML(n *yaml.Node, path []string) spot {
	sp := spot{key: [2]int{n.Line, n.Column}, value: [2]int{n.Line, n.Column}}
	for sp.depth < len(path) {
		for n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		seg := path[sp.depth]
		var next, key *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg {
					key, next = n.Content[i], n.Content[i+1]
				}
			}
		case yaml.SequenceNode:
			if i, err := strconv.Atoi(seg); err == nil && i >= 0 && i < len(n.Content) {
				next = n.Content[i]
			}
		}
		if next == nil {
			sp.value = sp.key
			return sp
		}
		sp.depth++
		sp.value = [2]int{next.Line, next.Column}
		sp.collection = next.Kind == yaml.MappingNode || next.Kind == yaml.SequenceNode
		if key != nil {
			sp.key = [2]int{key.Line, key.Column}
		} else {
			sp.key = sp.value
		}
		n = next
	}
	return sp
}

// topLevel returns the top-level declarations of a CUE file, looking inside
// the single struct literal a JSON file consists of.
func topLevel(f *ast.File) []ast.Decl {
	if len(f.Decls) == 1 {
		if embed, ok := f.Decls[0].(*ast.EmbedDecl); ok {
			if st, ok := embed.Expr.(*ast.StructLit); ok {
				return st.Elts
			}
		}
	}
	return f.Decls
}

func locateCUE(f *ast.File, path []string) spot {
	var node ast.Node = &ast.StructLit{Elts: topLevel(f)}
	pos := func(p token.Pos) [2]int {
		if !p.IsValid() {
			return [2]int{1, 1}
		}
		return [2]int{p.Line(), p.Column()}
	}
	start := [2]int{1, 1}
	if decls := topLevel(f); len(decls) > 0 {
		start = pos(decls[0].Pos())
	}
	sp := spot{key: start, value: start}
	for sp.depth < len(path) {
		seg := path[sp.depth]
		var next ast.Node
		var key token.Pos
		switch x := node.(type) {
		case *ast.StructLit, *ast.BinaryExpr, *ast.ParenExpr:
			// A struct may be written as a unification with a
			// definition (#Canary & {name: "canary"}): look in the
			// struct literals it is made of.
			for _, st := range structLits(x) {
				for _, decl := range st.Elts {
					field, ok := decl.(*ast.Field)
					if !ok {
						continue
					}
					if name, _, err := ast.LabelName(field.Label); err == nil && name == seg {
						next, key = field.Value, field.Label.Pos()
					}
				}
			}
		case *ast.ListLit:
			// Past a comprehension, an index no longer names the
			// element written at that place: stop at the list.
			i, err := strconv.Atoi(seg)
			if err == nil && i >= 0 && i < len(x.Elts) && !slices.ContainsFunc(x.Elts[:i+1], isComprehension) {
				next, key = x.Elts[i], x.Elts[i].Pos()
			}
		}
		if next == nil {
			sp.value = sp.key
			return sp
		}
		sp.depth++
		sp.key, sp.value = pos(key), pos(next.Pos())
		switch next.(type) {
		case *ast.StructLit, *ast.ListLit:
			sp.collection = true
		default:
			sp.collection = len(structLits(next)) > 0
		}
		node = next
	}
	return sp
}

// structLits returns the struct literals a struct is written with: itself,
// or the operands of a unification and of parentheses around one.
func structLits(e ast.Node) []*ast.StructLit {
	switch x := e.(type) {
	case *ast.StructLit:
		return []*ast.StructLit{x}
	case *ast.ParenExpr:
		return structLits(x.X)
	case *ast.BinaryExpr:
		if x.Op == token.AND {
			return append(structLits(x.X), structLits(x.Y)...)
		}
	}
	return nil
}

func isComprehension(e ast.Expr) bool {
	_, ok := e.(*ast.Comprehension)
	return ok
}
