package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
)

// The JSON and CUE editor: CUE's parser locates the fields (JSON is CUE),
// whose bytes are spliced.

type cueEditor struct {
	doc  *document
	t    *editText
	json bool
}

// cueStruct is a struct literal that declares fields of a path: the value
// of a field, or the top level of a CUE file (lit nil, no braces).
type cueStruct struct {
	lit    *ast.StructLit
	decls  []ast.Decl
	field  *ast.Field // the field whose value lit is; nil at the top
	parent *cueStruct
}

// cueField is a field and the struct declaring it.
type cueField struct {
	f  *ast.Field
	in *cueStruct
}

func newCUEEditor(file string, data []byte, format Format) (*cueEditor, error) {
	doc, errs := parseCUE(file, data, format)
	if len(errs) > 0 {
		return nil, errs.sort()
	}
	return &cueEditor{doc: doc, t: newEditText(data, false), json: format == FormatJSON}, nil
}

func (c *cueEditor) errorAt(path []string, msg string) Error {
	return c.doc.errorAt(path, false, msg)
}

func (c *cueEditor) errorNode(n ast.Node, path []string, msg string) Error {
	line, col := 1, 1
	if p := n.Pos(); p.IsValid() {
		line, col = p.Line(), p.Column()
	}
	return Error{File: c.doc.file, Line: line, Column: col, Path: strings.Join(path, "."), Message: msg}
}

func (c *cueEditor) top() *cueStruct {
	f := c.doc.syntax
	if len(f.Decls) == 1 {
		if embed, ok := f.Decls[0].(*ast.EmbedDecl); ok {
			if st, ok := embed.Expr.(*ast.StructLit); ok {
				return &cueStruct{lit: st, decls: st.Elts}
			}
		}
	}
	return &cueStruct{decls: f.Decls}
}

// elems returns the declarations of s that take room, comments left out.
func (s *cueStruct) elems() []ast.Decl {
	var out []ast.Decl
	for _, d := range s.decls {
		if _, ok := d.(*ast.CommentGroup); !ok {
			out = append(out, d)
		}
	}
	return out
}

// walk follows path through struct literals. It returns how much of the
// path is declared, the structs where the next name is declared or would
// be, and, when all of path is declared, its declarations.
func (c *cueEditor) walk(path []string) (depth int, in []*cueStruct, found []cueField, err error) {
	in = []*cueStruct{c.top()}
	for i, name := range path {
		found = nil
		var opaque ast.Node
		for _, s := range in {
			for _, d := range s.decls {
				switch x := d.(type) {
				case *ast.Field:
					if _, pattern := x.Label.(*ast.ListLit); pattern {
						continue // a constraint on other fields, not a field
					}
					n, _, err := ast.LabelName(x.Label)
					if err != nil {
						opaque = firstCUENode(opaque, ast.Node(x))
					} else if n == name {
						found = append(found, cueField{x, s})
					}
				case *ast.EmbedDecl, *ast.Comprehension:
					opaque = firstCUENode(opaque, ast.Node(x))
				}
			}
		}
		if len(found) == 0 {
			if opaque != nil {
				return 0, nil, nil, c.errorNode(opaque, path[:i+1], "may be declared by this expression; edit it by hand")
			}
			return i, in, nil, nil
		}
		if i == len(path)-1 {
			break
		}
		var next []*cueStruct
		for _, fd := range found {
			st, ok := fd.f.Value.(*ast.StructLit)
			if !ok {
				return 0, nil, nil, c.errorNode(fd.f.Value, path[:i+1], "computed by an expression; edit it by hand")
			}
			next = append(next, &cueStruct{lit: st, decls: st.Elts, field: fd.f, parent: fd.in})
		}
		in = next
	}
	return len(path), in, found, nil
}

func firstCUENode(a, b ast.Node) ast.Node {
	if a != nil {
		return a
	}
	return b
}

func (c *cueEditor) set(path []string, value any, after string) ([]editSplice, error) {
	depth, in, found, err := c.walk(path)
	if err != nil {
		return nil, err
	}
	if depth == len(path) {
		var ss []editSplice
		for _, fd := range found {
			lit, ok := fd.f.Value.(*ast.BasicLit)
			if !ok || !lit.ValuePos.IsValid() {
				return nil, c.errorNode(fd.f.Value, path, "computed by an expression; edit it by hand")
			}
			if v, ok := literalValue(lit); ok && equalPlainData(v, value) && sameScalarKind(v, value) {
				continue
			}
			start := lit.ValuePos.Offset()
			ss = append(ss, editSplice{start, start + len(lit.Value), c.scalar(value)})
		}
		return ss, nil
	}
	s := in[len(in)-1]
	anchor := -1
	if depth == len(path)-1 && after != "" {
		for _, cs := range in {
			for i, d := range cs.elems() {
				if f, ok := d.(*ast.Field); ok {
					if n, _, err := ast.LabelName(f.Label); err == nil && n == after {
						s, anchor = cs, i
					}
				}
			}
		}
	}
	return c.insert(s, path[:depth], path[depth:], value, anchor)
}

func sameScalarKind(a, b any) bool {
	_, as := a.(string)
	_, bs := b.(string)
	return as == bs
}

// insert adds names (a field and the fields below it) to s, after its
// element anchor, or last when anchor is -1.
func (c *cueEditor) insert(s *cueStruct, path, names []string, value any, anchor int) ([]editSplice, error) {
	elems := s.elems()
	if anchor < 0 {
		anchor = len(elems) - 1
	}
	sq := &editSeq{t: c.t, open: -1, close: -1, commas: c.json, comment: "//"}
	for _, d := range elems {
		if !d.Pos().IsValid() || !d.End().IsValid() {
			return nil, c.errorNode(d, path, "cannot find where this declaration ends; edit it by hand")
		}
		sq.elems = append(sq.elems, [2]int{d.Pos().Offset(), d.End().Offset()})
	}
	kvsep := ": "
	if anchor >= 0 {
		if f, ok := elems[anchor].(*ast.Field); ok && c.json && f.Label.End().IsValid() && f.Value.Pos().IsValid() {
			from, to := f.Label.End().Offset(), f.Value.Pos().Offset()
			if from <= to && to <= len(c.t.data) && !bytes.ContainsAny(c.t.data[from:to], " \t") {
				kvsep = ":"
			}
		}
	}
	unit := "  "
	switch {
	case s.lit == nil:
		if len(elems) == 0 {
			return nil, c.errorAt(path, "cannot edit an empty file")
		}
	case !s.lit.Lbrace.IsValid():
		// A struct written without braces ("target: phase: x") holds one
		// field; braces make room for another.
		if len(elems) != 1 {
			return nil, c.errorAt(path, "cannot find the struct's braces; edit it by hand")
		}
		text := c.field(names, value, kvsep, "", "", false)
		return []editSplice{{sq.elems[0][0], sq.elems[0][0], "{"}, {sq.elems[0][1], sq.elems[0][1], ", " + text + "}"}}, nil
	default:
		sq.open, sq.close = s.lit.Lbrace.Offset(), s.lit.Rbrace.Offset()
		if !s.lit.Rbrace.IsValid() || sq.close < sq.open || sq.close >= len(c.t.data) || c.t.data[sq.open] != '{' || c.t.data[sq.close] != '}' {
			return nil, c.errorAt(path, "cannot find the struct's braces; edit it by hand")
		}
		if !c.json {
			sq.commas = c.commas(sq)
		}
		if len(elems) > 0 {
			outer := c.t.indent(c.t.lineOf(sq.open))
			inner := c.t.indent(c.t.lineOf(sq.elems[0][0]))
			if len(inner) > len(outer) && strings.HasPrefix(inner, outer) {
				unit = inner[len(outer):]
			} else if strings.Contains(inner, "\t") {
				unit = "\t"
			}
			sq.compact = kvsep == ":" && !bytes.ContainsAny(c.t.data[sq.open+1:sq.elems[0][0]], " \t\r\n")
			if len(elems) > 1 {
				sq.compact = sq.compact && !bytes.ContainsAny(c.t.data[sq.elems[0][1]:sq.elems[1][0]], " \t\r\n")
			}
		}
	}
	return sq.insertAfter(anchor, func(indent string, ownLine bool) string {
		return c.field(names, value, kvsep, indent, unit, ownLine)
	}), nil
}

// commas reports whether a CUE struct separates its elements with commas:
// always on one line, else when they already do.
func (c *cueEditor) commas(sq *editSeq) bool {
	if len(sq.elems) == 0 || c.t.lineOf(sq.open) == c.t.lineOf(sq.close) {
		return true
	}
	for i := range sq.elems[:len(sq.elems)-1] {
		if comma, _, _ := sq.tail(i); comma {
			return true
		}
	}
	return false
}

// field writes names as nested fields: in CUE "a: b: 10"; in JSON
// {"a": {"b": 10}}, broken over lines like the struct when ownLine.
func (c *cueEditor) field(names []string, value any, kvsep, indent, unit string, ownLine bool) string {
	if !c.json {
		var b strings.Builder
		for _, n := range names {
			b.WriteString(cueLabel(n))
			b.WriteString(": ")
		}
		b.WriteString(c.scalar(value))
		return b.String()
	}
	key := c.scalar(names[0]) + kvsep
	if len(names) == 1 {
		return key + c.scalar(value)
	}
	if !ownLine {
		return key + "{" + c.field(names[1:], value, kvsep, "", unit, false) + "}"
	}
	eol := c.t.eol(0)
	return key + "{" + eol + indent + unit + c.field(names[1:], value, kvsep, indent+unit, unit, true) + eol + indent + "}"
}

// cueLabel writes a field name, quoted unless it is a plain identifier.
func cueLabel(name string) string {
	plain := name != "" && name != "true" && name != "false" && name != "null"
	for i, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '_')) {
			plain = false
		}
	}
	if plain {
		return name
	}
	return literal.String.Quote(name)
}

// scalar writes a string or int as a JSON or CUE literal.
func (c *cueEditor) scalar(value any) string {
	switch x := value.(type) {
	case int:
		return strconv.Itoa(x)
	case string:
		if !c.json {
			return literal.String.Quote(x)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(x) // a valid UTF-8 string always encodes
		return strings.TrimSuffix(b.String(), "\n")
	}
	panic(fmt.Sprintf("plan: cannot write %T", value))
}

func (c *cueEditor) remove(path []string, prune bool) (bool, []editSplice, error) {
	depth, in, found, err := c.walk(path)
	if err != nil || depth < len(path) {
		return false, nil, err
	}
	if len(found) > 1 {
		return false, nil, c.errorNode(found[1].f, path, "declared more than once; edit it by hand")
	}
	fd := found[0]
	if prune && len(in) == 1 && len(fd.in.elems()) == 1 && fd.in.field != nil {
		fd = cueField{fd.in.field, fd.in.parent}
	}
	// A field alone in a struct written without braces ("target:
	// percentage: 5") goes with the field holding the struct.
	for fd.in.lit != nil && !fd.in.lit.Lbrace.IsValid() && fd.in.field != nil && len(fd.in.elems()) == 1 {
		fd = cueField{fd.in.field, fd.in.parent}
	}
	elems := fd.in.elems()
	sq := &editSeq{t: c.t, open: -1, close: -1, commas: c.json, comment: "//"}
	idx := -1
	for i, d := range elems {
		if !d.Pos().IsValid() || !d.End().IsValid() {
			return false, nil, c.errorNode(d, path, "cannot find where this declaration ends; edit it by hand")
		}
		sq.elems = append(sq.elems, [2]int{d.Pos().Offset(), d.End().Offset()})
		if d == ast.Decl(fd.f) {
			idx = i
		}
	}
	if idx < 0 {
		return false, nil, c.errorNode(fd.f, path, "cannot find the field; edit it by hand")
	}
	if lit := fd.in.lit; lit != nil && lit.Lbrace.IsValid() && lit.Rbrace.IsValid() {
		sq.open, sq.close = lit.Lbrace.Offset(), lit.Rbrace.Offset()
		if !c.json {
			sq.commas = c.commas(sq)
		}
	}
	return true, sq.remove(idx), nil
}

// plain returns the file's data: its literals when it is literal data, else
// what it evaluates to, when that is concrete.
func (c *cueEditor) plain() (any, bool) {
	if v, ok := literalData(c.doc.syntax); ok {
		return v, true
	}
	// Evaluation resolves references in place: use a syntax tree of its own.
	f, err := parser.ParseFile(c.doc.file, c.t.data, parser.ParseComments)
	if err != nil {
		return nil, false
	}
	v := cuecontext.New().BuildFile(f)
	if v.Err() != nil {
		return nil, false
	}
	b, err := v.MarshalJSON()
	if err != nil {
		return nil, false
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, false
	}
	return out, true
}

func (c *cueEditor) values(path []string) ([]any, error) {
	depth, _, found, err := c.walk(path)
	if err != nil || depth < len(path) {
		return nil, err
	}
	var out []any
	for _, fd := range found {
		lit, ok := fd.f.Value.(*ast.BasicLit)
		if !ok {
			return nil, c.errorNode(fd.f.Value, path, "computed by an expression; edit it by hand")
		}
		v, ok := literalValue(lit)
		if !ok {
			return nil, c.errorNode(lit, path, "cannot read the value; edit it by hand")
		}
		out = append(out, v)
	}
	return out, nil
}
