package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
	"gopkg.in/yaml.v3"
)

// This file rewrites the fields of a plan file that commits change (the
// target, the feature flags and annotations) without reformatting anything
// else: people review these commits, so an edit replaces the bytes of the
// edited values and leaves comments, key order, quoting, indentation, flow
// or block style and line endings alone. Files are located with their own parsers (yaml.v3
// for YAML, CUE's parser for JSON and CUE) and edited by splicing bytes.

// FileEdit is one change to a plan file, made by ApplyEdits. Build one with
// SetTarget, SetFeature, RemoveFeature or SetAnnotation.
type FileEdit struct {
	kind          editKind
	phase         string
	percentage    int
	hasPercentage bool
	feature       string
	annotation    string // the key, for SetAnnotation
	text          string // the value, for SetAnnotation
}

type editKind uint8

const (
	editTarget editKind = iota + 1
	editFeature
	editRemoveFeature
	editAnnotation
	editRemoveAnnotation
)

// SetTarget moves spec.target to t: it sets target.phase, and sets
// target.percentage or, when t.Percentage is nil, removes it.
func SetTarget(t Target) FileEdit {
	e := FileEdit{kind: editTarget, phase: t.Phase}
	if t.Percentage != nil {
		e.percentage, e.hasPercentage = *t.Percentage, true
	}
	return e
}

// SetFeature sets the rollout percentage of the feature flag name under
// spec.features, adding the flag (and the features mapping) when absent.
func SetFeature(name string, percentage int) FileEdit {
	return FileEdit{kind: editFeature, feature: name, percentage: percentage, hasPercentage: true}
}

// RemoveFeature removes the feature flag name from spec.features, and
// spec.features itself when no flag is left. Removing a flag the plan does
// not declare is an error.
func RemoveFeature(name string) FileEdit {
	return FileEdit{kind: editRemoveFeature, feature: name}
}

// SetAnnotation sets the annotation key under metadata.annotations to
// value, adding the annotation (and the annotations mapping) when absent.
// Annotations are where commands leave instructions for the daemon that the
// plan's spec has no field for, such as migrate.hal9.ai/force-rollback.
func SetAnnotation(key, value string) FileEdit {
	return FileEdit{kind: editAnnotation, annotation: key, text: value}
}

// RemoveAnnotation removes the annotation key from metadata.annotations,
// and metadata.annotations itself when none is left; an annotation the plan
// does not have is left absent. The daemon removes a one-shot instruction
// (a forced rollback, a restore) once it has carried it out.
func RemoveAnnotation(key string) FileEdit {
	return FileEdit{kind: editRemoveAnnotation, annotation: key}
}

// String describes the edit, as in a commit message.
func (e FileEdit) String() string {
	switch e.kind {
	case editTarget:
		if e.hasPercentage {
			return fmt.Sprintf("set spec.target to %s %d%%", e.phase, e.percentage)
		}
		return fmt.Sprintf("set spec.target to %s (its last step)", e.phase)
	case editFeature:
		return fmt.Sprintf("set feature %s to %d%%", e.feature, e.percentage)
	case editRemoveFeature:
		return "remove feature " + e.feature
	case editAnnotation:
		return fmt.Sprintf("set annotation %s to %q", e.annotation, e.text)
	case editRemoveAnnotation:
		return "remove annotation " + e.annotation
	}
	return "no edit"
}

// path is the field the edit changes, as in errors.
func (e FileEdit) path() []string {
	switch e.kind {
	case editTarget:
		return []string{"spec", "target"}
	case editAnnotation, editRemoveAnnotation:
		return []string{"metadata", "annotations", e.annotation}
	}
	return []string{"spec", "features", e.feature}
}

// editOp is one step of a FileEdit: set a scalar field or remove a field.
type editOp struct {
	remove bool
	path   []string
	value  any    // string or int, for a set
	after  string // for a set that inserts: the sibling to insert after
	prune  bool   // for a remove: also remove the parent when left empty
	must   bool   // for a remove: the field must exist
}

func (e FileEdit) ops() []editOp {
	switch e.kind {
	case editTarget:
		ops := []editOp{{path: []string{"spec", "target", "phase"}, value: e.phase}}
		pct := []string{"spec", "target", "percentage"}
		if e.hasPercentage {
			return append(ops, editOp{path: pct, value: e.percentage, after: "phase"})
		}
		return append(ops, editOp{remove: true, path: pct})
	case editFeature:
		return []editOp{{path: e.path(), value: e.percentage}}
	case editRemoveFeature:
		return []editOp{{remove: true, path: e.path(), prune: true, must: true}}
	case editAnnotation:
		return []editOp{{path: e.path(), value: e.text}}
	case editRemoveAnnotation:
		return []editOp{{remove: true, path: e.path(), prune: true}}
	}
	return nil
}

// check rejects edits that cannot be written into any file.
func (e FileEdit) check() string {
	switch e.kind {
	case editTarget:
		if e.phase == "" {
			return "the target needs a phase"
		}
		if !utf8.ValidString(e.phase) {
			return "the target phase is not valid UTF-8"
		}
	case editFeature, editRemoveFeature:
		if e.feature == "" {
			return "a feature flag needs a name"
		}
		if !utf8.ValidString(e.feature) {
			return "the feature flag name is not valid UTF-8"
		}
	case editAnnotation, editRemoveAnnotation:
		if e.annotation == "" {
			return "an annotation needs a key"
		}
		if !utf8.ValidString(e.annotation) || !utf8.ValidString(e.text) {
			return "the annotation is not valid UTF-8"
		}
	default:
		return "empty edit"
	}
	return ""
}

// ApplyEdits applies edits in order to the plan file named file with
// content data and returns the new content. The format is chosen by the
// file's extension (FormatOf). Only the bytes of the edited values change;
// new fields are written in the style of their siblings, and a field that
// goes takes its own lines with it.
//
// A file that does not parse is refused with its Errors, and an edit that
// cannot be made safely with an Error naming the file, line, column and
// field: in CUE, a target or flag computed by an expression or a
// reference; in YAML, an alias, anchor, merge key, tag or block scalar on
// the way to the field. Every edit is checked by parsing the
// result again: it must hold the same data as before except for the edited
// field.
//
// ApplyEdits does not validate the plan against the schema (a phase the plan
// does not declare is written as asked); callers validate the result, with
// Validator.ValidateOne, before committing it. It expands a YAML file's
// aliases within the default node budget (DefaultLimits().MaxNodes).
func ApplyEdits(file string, data []byte, edits ...FileEdit) ([]byte, error) {
	format := FormatOf(file)
	if format == "" {
		return nil, Error{File: file, Message: "unknown file type (expected .yaml, .yml, .json or .cue)"}
	}
	out := bytes.Clone(data)
	for _, e := range edits {
		if msg := e.check(); msg != "" {
			return nil, Error{File: file, Message: "cannot edit: " + msg}
		}
		next, err := applyEdit(file, format, out, e)
		if err != nil {
			return nil, err
		}
		out = next
	}
	return out, nil
}

// editor changes one parsed plan file. Its methods return splices against
// the bytes it parsed; applyEdit parses again after every change.
type editor interface {
	// set makes the scalar field at path hold value. An absent field is
	// inserted after its sibling named after (or last), with the mappings
	// above it that are absent too.
	set(path []string, value any, after string) ([]editSplice, error)
	// remove deletes the field at path; with prune, it deletes the parent
	// instead when the field is its only one.
	remove(path []string, prune bool) (found bool, _ []editSplice, _ error)
	// plain returns the file's data as plain Go values, if it has any.
	plain() (any, bool)
	// values returns the literal values declared for the field at path.
	values(path []string) ([]any, error)
	errorAt(path []string, msg string) Error
}

func newEditor(file string, format Format, data []byte) (editor, error) {
	if format == FormatYAML {
		return newYAMLEditor(file, data)
	}
	return newCUEEditor(file, data, format)
}

func applyEdit(file string, format Format, data []byte, e FileEdit) ([]byte, error) {
	ed, err := newEditor(file, format, data)
	if err != nil {
		return nil, err
	}
	first := ed
	out := data
	for _, op := range e.ops() {
		if ed == nil {
			if ed, err = newEditor(file, format, out); err != nil {
				return nil, first.errorAt(op.path, fmt.Sprintf("cannot edit safely: the result would not parse (%v); edit it by hand", err))
			}
		}
		var ss []editSplice
		if op.remove {
			var found bool
			found, ss, err = ed.remove(op.path, op.prune)
			if err == nil && !found && op.must {
				err = ed.errorAt(op.path, "no such feature flag")
			}
		} else {
			ss, err = ed.set(op.path, op.value, op.after)
		}
		if err != nil {
			return nil, err
		}
		if len(ss) == 0 {
			continue
		}
		if out, err = applyEditSplices(out, ss); err != nil {
			return nil, first.errorAt(op.path, "cannot edit safely: "+err.Error())
		}
		ed = nil
	}
	if bytes.Equal(out, data) {
		return out, nil
	}
	if err := verifyEdit(file, format, first, out, e); err != nil {
		return nil, err
	}
	return out, nil
}

// verifyEdit parses the edited file again and checks that it holds what the
// original held, with the edit applied and nothing else changed.
func verifyEdit(file string, format Format, before editor, out []byte, e FileEdit) error {
	unsafe := func(why string) error {
		return before.errorAt(e.path(), "cannot edit safely: "+why+"; edit it by hand")
	}
	after, err := newEditor(file, format, out)
	if err != nil {
		return unsafe(fmt.Sprintf("the result would not parse (%v)", err))
	}
	if old, ok := before.plain(); ok {
		want, ok := e.applyPlain(old)
		if !ok {
			return unsafe("the file is not shaped like a plan")
		}
		got, ok := after.plain()
		if !ok || !equalPlainData(got, want) {
			return unsafe("the result would change more than " + strings.Join(e.path(), "."))
		}
		return nil
	}
	// A CUE file that does not evaluate to data on its own: check the
	// edited fields' literals.
	for _, op := range e.ops() {
		vals, err := after.values(op.path)
		if err != nil {
			return err
		}
		switch {
		case op.remove && len(vals) > 0:
			return unsafe(strings.Join(op.path, ".") + " would still be declared")
		case !op.remove && len(vals) == 0:
			return unsafe(strings.Join(op.path, ".") + " would not be declared")
		}
		for _, v := range vals {
			if !op.remove && !equalPlainData(v, op.value) {
				return unsafe(fmt.Sprintf("%s would be %v", strings.Join(op.path, "."), v))
			}
		}
	}
	return nil
}

// applyPlain applies the edit to a plan's plain data, as ApplyEdits does to
// its file.
func (e FileEdit) applyPlain(root any) (any, bool) {
	m, ok := root.(map[string]any)
	if !ok {
		return nil, false
	}
	child := func(m map[string]any, name string) (map[string]any, bool) {
		switch c := m[name].(type) {
		case map[string]any:
			return c, true
		case nil:
			c2 := map[string]any{}
			m[name] = c2
			return c2, true
		}
		return nil, false
	}
	if e.kind == editRemoveAnnotation {
		md, ok := m["metadata"].(map[string]any)
		if !ok {
			return m, true
		}
		if a, ok := md["annotations"].(map[string]any); ok {
			delete(a, e.annotation)
			if len(a) == 0 {
				delete(md, "annotations")
			}
		}
		return m, true
	}
	if e.kind == editAnnotation {
		md, ok := child(m, "metadata")
		if !ok {
			return nil, false
		}
		a, ok := child(md, "annotations")
		if !ok {
			return nil, false
		}
		a[e.annotation] = e.text
		return m, true
	}
	spec, ok := child(m, "spec")
	if !ok {
		return nil, false
	}
	switch e.kind {
	case editTarget:
		t, ok := child(spec, "target")
		if !ok {
			return nil, false
		}
		t["phase"] = e.phase
		if e.hasPercentage {
			t["percentage"] = e.percentage
		} else {
			delete(t, "percentage")
		}
	case editFeature:
		f, ok := child(spec, "features")
		if !ok {
			return nil, false
		}
		f[e.feature] = e.percentage
	case editRemoveFeature:
		f, ok := spec["features"].(map[string]any)
		if !ok {
			return nil, false
		}
		delete(f, e.feature)
		if len(f) == 0 {
			delete(spec, "features")
		}
	}
	return m, true
}

// equalPlainData compares plain data, numbers by value whatever their Go type.
func equalPlainData(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equalPlainData(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalPlainData(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	if fa, ok := number(a); ok {
		fb, ok := number(b)
		return ok && fa == fb
	}
	switch a.(type) {
	case nil, bool, string:
		return a == b
	}
	return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

// editSplice replaces data[start:end] with text.
type editSplice struct {
	start, end int
	text       string
}

func applyEditSplices(data []byte, ss []editSplice) ([]byte, error) {
	slices.SortStableFunc(ss, func(a, b editSplice) int { return a.start - b.start })
	var out []byte
	at := 0
	for _, s := range ss {
		if s.start < at || s.end < s.start || s.end > len(data) {
			return nil, fmt.Errorf("overlapping changes")
		}
		out = append(out, data[at:s.start]...)
		out = append(out, s.text...)
		at = s.end
	}
	return append(out, data[at:]...), nil
}

// editText is a file split into lines.
type editText struct {
	data  []byte
	lines []editLine
}

// editLine is one line: data[start:end] is its content, data[end:next] its
// line break (empty on a last line without one).
type editLine struct{ start, end, next int }

// newEditText splits data into lines. YAML breaks lines at CR, LF, CRLF, NEL,
// LS and PS, and does not count a byte order mark as part of the first line;
// CUE breaks lines at LF only.
func newEditText(data []byte, yamlBreaks bool) *editText {
	t := &editText{data: data}
	start := 0
	if yamlBreaks && bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		start = 3
	}
	for i := start; i < len(data); {
		w := 0
		switch c := data[i]; {
		case c == '\n':
			w = 1
		case c == '\r' && i+1 < len(data) && data[i+1] == '\n':
			w = 2
		case c == '\r' && yamlBreaks:
			w = 1
		case yamlBreaks && c == 0xC2 && i+1 < len(data) && data[i+1] == 0x85:
			w = 2
		case yamlBreaks && c == 0xE2 && i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xA8 || data[i+2] == 0xA9):
			w = 3
		}
		if w == 0 {
			i++
			continue
		}
		t.lines = append(t.lines, editLine{start, i, i + w})
		i += w
		start = i
	}
	t.lines = append(t.lines, editLine{start, len(data), len(data)})
	return t
}

// lineOf returns the index of the line holding offset off.
func (t *editText) lineOf(off int) int {
	i, found := slices.BinarySearchFunc(t.lines, off, func(l editLine, off int) int { return l.start - off })
	if !found {
		i--
	}
	return max(i, 0)
}

// eol returns the line break to write after line l: its own, or the file's
// first, or LF.
func (t *editText) eol(l int) string {
	if ln := t.lines[l]; ln.next > ln.end {
		return string(t.data[ln.end:ln.next])
	}
	for _, ln := range t.lines {
		if ln.next > ln.end {
			return string(t.data[ln.end:ln.next])
		}
	}
	return "\n"
}

// indent returns the leading spaces and tabs of line l.
func (t *editText) indent(l int) string {
	ln := t.lines[l]
	i := ln.start
	for i < ln.end && (t.data[i] == ' ' || t.data[i] == '\t') {
		i++
	}
	return string(t.data[ln.start:i])
}

// spaces returns how many spaces line l starts with.
func (t *editText) spaces(l int) int {
	ln := t.lines[l]
	i := ln.start
	for i < ln.end && t.data[i] == ' ' {
		i++
	}
	return i - ln.start
}

func (t *editText) blank(l int) bool {
	ln := t.lines[l]
	return len(bytes.Trim(t.data[ln.start:ln.end], " \t")) == 0
}

// firstOnLine reports whether only spaces and tabs precede off on its line.
func (t *editText) firstOnLine(off int) bool {
	ln := t.lines[t.lineOf(off)]
	return len(bytes.Trim(t.data[ln.start:off], " \t")) == 0
}

func (t *editText) skipSpace(p int) int {
	for p < len(t.data) && (t.data[p] == ' ' || t.data[p] == '\t') {
		p++
	}
	return p
}

// deleteLines returns the splice that removes lines a to b with their line
// breaks, keeping a file that did not end with a line break without one.
func (t *editText) deleteLines(a, b int) editSplice {
	if lb := t.lines[b]; lb.next == lb.end && a > 0 {
		return editSplice{t.lines[a-1].end, lb.end, ""}
	}
	return editSplice{t.lines[a].start, t.lines[b].next, ""}
}

// editSeq is a comma- or newline-separated collection in the source: a YAML
// flow mapping, or a CUE or JSON struct.
type editSeq struct {
	t       *editText
	open    int      // offset of "{", or -1 when the collection has no braces
	close   int      // offset of "}", or -1
	elems   [][2]int // start and end offsets of the elements
	commas  bool     // elements are separated by commas
	compact bool     // no spaces around separators: {"a":1,"b":2}
	comment string   // what starts a comment: "#" or "//"
}

// tail returns what follows element i on its line: whether a comma comes
// next, and whether nothing but a comment follows until the end of the line.
func (s *editSeq) tail(i int) (comma, endsLine bool, commaAt int) {
	d := s.t.data
	p := s.t.skipSpace(s.elems[i][1])
	commaAt = -1
	if p < len(d) && d[p] == ',' {
		comma, commaAt = true, p
		p = s.t.skipSpace(p + 1)
	}
	ln := s.t.lines[s.t.lineOf(s.elems[i][1])]
	if p > ln.end {
		return comma, false, commaAt
	}
	if bytes.HasPrefix(d[p:ln.end], []byte(s.comment)) {
		p = ln.end
	}
	return comma, p == ln.end, commaAt
}

// insertAfter returns the splices that insert a new element after element
// i: on a line of its own, indented like element i, when the elements are
// on lines of their own; else right after element i on its line. render
// writes the element for a given indentation, and whether it is on a line
// of its own.
func (s *editSeq) insertAfter(i int, render func(indent string, ownLine bool) string) []editSplice {
	if len(s.elems) == 0 {
		return []editSplice{{s.open + 1, s.open + 1, render("", false)}}
	}
	prev := s.elems[i]
	comma, endsLine, _ := s.tail(i)
	pl := s.t.lineOf(prev[1])
	ownLine := endsLine && s.t.firstOnLine(prev[0])
	if ownLine {
		switch {
		case i+1 < len(s.elems):
			ownLine = s.t.lineOf(s.elems[i+1][0]) > pl
		case s.close >= 0:
			ownLine = s.t.lineOf(s.close) > pl
		}
	}
	if ownLine {
		at := s.t.lines[pl].end
		elem := s.t.eol(pl) + s.t.indent(s.t.lineOf(prev[0])) + render(s.t.indent(s.t.lineOf(prev[0])), true)
		var out []editSplice
		if s.commas {
			if comma {
				elem += ","
			} else {
				out = append(out, editSplice{prev[1], prev[1], ","})
			}
		}
		return append(out, editSplice{at, at, elem})
	}
	sep := ", "
	if s.compact {
		sep = ","
	}
	return []editSplice{{prev[1], prev[1], sep + render("", false)}}
}

// remove returns the splices that remove element i: its lines when it has
// them to itself, else the element and one separator next to it.
func (s *editSeq) remove(i int) []editSplice {
	el := s.elems[i]
	comma, endsLine, commaAt := s.tail(i)
	if endsLine && s.t.firstOnLine(el[0]) {
		out := []editSplice{s.t.deleteLines(s.t.lineOf(el[0]), s.t.lineOf(el[1]))}
		if s.commas && !comma && i > 0 {
			// The element was last: the comma after the one before it
			// would now end the collection, which JSON does not allow.
			if prevComma, _, at := s.tail(i - 1); prevComma {
				out = append(out, editSplice{at, at + 1, ""})
			}
		}
		return out
	}
	switch {
	case i > 0:
		return []editSplice{{s.elems[i-1][1], el[1], ""}}
	case i+1 < len(s.elems):
		return []editSplice{{el[0], s.elems[i+1][0], ""}}
	case comma:
		return []editSplice{{el[0], commaAt + 1, ""}}
	}
	return []editSplice{{el[0], el[1], ""}}
}

// ---- YAML ----

type yamlEditor struct {
	doc  *document
	t    *editText
	unit int // indentation step of nested block mappings
}

func newYAMLEditor(file string, data []byte) (*yamlEditor, error) {
	if !utf8.Valid(data) {
		return nil, Error{File: file, Line: 1, Column: 1, Message: "cannot edit: the file is not valid UTF-8"}
	}
	doc, errs := parseYAML(file, data, DefaultLimits().MaxNodes)
	if len(errs) > 0 {
		return nil, errs.sort()
	}
	if doc.node.Kind != yaml.MappingNode {
		return nil, Error{File: file, Line: doc.node.Line, Column: doc.node.Column, Message: "cannot edit: expected a mapping at the top of the file"}
	}
	return &yamlEditor{doc: doc, t: newEditText(data, true), unit: yamlUnit(doc.node)}, nil
}

// yamlUnit finds the indentation step of the file's block mappings, 2 when
// no mapping is nested in another.
func yamlUnit(n *yaml.Node) int {
	if n.Kind == yaml.MappingNode && n.Style&yaml.FlowStyle == 0 {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 && v.Content[0].Column > k.Column {
				return v.Content[0].Column - k.Column
			}
		}
	}
	for _, c := range n.Content {
		if u := yamlUnit(c); u != 2 {
			return u
		}
	}
	return 2
}

func (y *yamlEditor) errorAt(path []string, msg string) Error {
	return y.doc.errorAt(path, false, msg)
}

func (y *yamlEditor) errorNode(n *yaml.Node, path []string, msg string) Error {
	return Error{File: y.doc.file, Line: n.Line, Column: n.Column, Path: strings.Join(path, "."), Message: msg}
}

func (y *yamlEditor) plain() (any, bool) { return y.doc.value, true }

// offset returns the byte offset of a node's line and column; yaml.v3
// counts columns in characters.
func (y *yamlEditor) offset(n *yaml.Node) (int, error) {
	if n.Line < 1 || n.Line > len(y.t.lines) {
		return 0, fmt.Errorf("line %d out of range", n.Line)
	}
	ln := y.t.lines[n.Line-1]
	i := ln.start
	for c := 1; c < n.Column; c++ {
		if i >= ln.end {
			return 0, fmt.Errorf("column %d out of range", n.Column)
		}
		_, w := utf8.DecodeRune(y.t.data[i:ln.end])
		i += w
	}
	return i, nil
}

// field finds the last name of path in mapping m, refusing what could make
// an edit change more than the field.
func (y *yamlEditor) field(m *yaml.Node, path []string) (k, v *yaml.Node, idx int, err error) {
	name := path[len(path)-1]
	idx = -1
	for i := 0; i+1 < len(m.Content); i += 2 {
		key := m.Content[i]
		if key.Tag == "!!merge" {
			return nil, nil, -1, y.errorNode(key, path[:len(path)-1], "a merge key (<<) can supply fields; edit it by hand")
		}
		if key.Kind == yaml.ScalarNode && key.Value == name {
			k, v, idx = key, m.Content[i+1], i
		}
	}
	if v == nil {
		return nil, nil, -1, nil
	}
	switch {
	case v.Kind == yaml.AliasNode:
		err = y.errorNode(v, path, fmt.Sprintf("written as an alias (*%s); edit it by hand", v.Value))
	case v.Anchor != "":
		err = y.errorNode(v, path, fmt.Sprintf("anchored (&%s), so aliases may share it; edit it by hand", v.Anchor))
	case v.Style&yaml.TaggedStyle != 0 || k.Style&yaml.TaggedStyle != 0:
		err = y.errorNode(v, path, "written with an explicit tag; edit it by hand")
	}
	return k, v, idx, err
}

func isYAMLNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func isFlowIndicator(c byte) bool { return c == ',' || c == '[' || c == ']' || c == '{' || c == '}' }

// scalarSpan returns the byte span of a one-line scalar, quotes included.
func (y *yamlEditor) scalarSpan(n *yaml.Node, flow bool, path []string) (start, end int, err error) {
	start, err = y.offset(n)
	if err != nil {
		return 0, 0, y.errorNode(n, path, "cannot find the value: "+err.Error())
	}
	d := y.t.data
	ln := y.t.lines[n.Line-1]
	several := y.errorNode(n, path, "written over several lines; edit it by hand")
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return 0, 0, y.errorNode(n, path, "written as a block scalar (| or >); edit it by hand")
	case n.Style&yaml.DoubleQuotedStyle != 0:
		if start >= ln.end || d[start] != '"' {
			return 0, 0, several
		}
		i := start + 1
		for ; i < ln.end && d[i] != '"'; i++ {
			if d[i] == '\\' {
				i++
			}
		}
		if i >= ln.end {
			return 0, 0, several
		}
		return start, i + 1, nil
	case n.Style&yaml.SingleQuotedStyle != 0:
		if start >= ln.end || d[start] != '\'' {
			return 0, 0, several
		}
		i := start + 1
		for ; i < ln.end; i++ {
			if d[i] == '\'' {
				if i+1 < ln.end && d[i+1] == '\'' {
					i++
					continue
				}
				break
			}
		}
		if i >= ln.end {
			return 0, 0, several
		}
		return start, i + 1, nil
	}
	i := start
	for i < ln.end {
		c := d[i]
		if (c == ' ' || c == '\t') && i+1 < ln.end && d[i+1] == '#' {
			break
		}
		if c == ':' && (i+1 == ln.end || d[i+1] == ' ' || d[i+1] == '\t' || flow && isFlowIndicator(d[i+1])) {
			break
		}
		if flow && isFlowIndicator(c) {
			break
		}
		i++
	}
	for i > start && (d[i-1] == ' ' || d[i-1] == '\t') {
		i--
	}
	if string(d[start:i]) != n.Value {
		return 0, 0, several
	}
	return start, i, nil
}

// nodeEnd returns the offset just after a node inside a flow collection.
func (y *yamlEditor) nodeEnd(n *yaml.Node, path []string) (int, error) {
	switch {
	case n.Kind == yaml.ScalarNode:
		start, end, err := y.scalarSpan(n, true, path)
		if err == nil && start == end {
			err = y.errorNode(n, path, "has no value; edit it by hand")
		}
		return end, err
	case (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && n.Style&yaml.FlowStyle != 0 && n.Anchor == "" && n.Style&yaml.TaggedStyle == 0:
		c, err := y.flowClose(n, path)
		return c + 1, err
	}
	return 0, y.errorNode(n, path, "written in a way that cannot be edited safely; edit it by hand")
}

// flowClose returns the offset of the bracket that closes a flow collection.
func (y *yamlEditor) flowClose(n *yaml.Node, path []string) (int, error) {
	open, err := y.offset(n)
	d := y.t.data
	opener, closer := byte('{'), byte('}')
	if n.Kind == yaml.SequenceNode {
		opener, closer = '[', ']'
	}
	if err != nil || open >= len(d) || d[open] != opener {
		return 0, y.errorNode(n, path, "cannot find the opening bracket; edit it by hand")
	}
	p := open + 1
	if len(n.Content) > 0 {
		if p, err = y.nodeEnd(n.Content[len(n.Content)-1], path); err != nil {
			return 0, err
		}
	}
	for p < len(d) {
		switch c := d[p]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',':
			p++
			continue
		case c == '#':
			p = y.t.lines[y.t.lineOf(p)].end
			continue
		case c == closer:
			return p, nil
		}
		break
	}
	return 0, y.errorNode(n, path, "cannot find the closing bracket; edit it by hand")
}

// flowSeq describes the flow mapping m for inserting and removing entries.
func (y *yamlEditor) flowSeq(m *yaml.Node, path []string) (*editSeq, error) {
	open, err := y.offset(m)
	if err != nil {
		return nil, y.errorNode(m, path, "cannot find the mapping; edit it by hand")
	}
	close, err := y.flowClose(m, path)
	if err != nil {
		return nil, err
	}
	s := &editSeq{t: y.t, open: open, close: close, commas: true, comment: "#"}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		start, err := y.offset(k)
		if err != nil {
			return nil, y.errorNode(k, path, "cannot find the key; edit it by hand")
		}
		end, err := y.nodeEnd(v, append(slices.Clip(path), k.Value))
		if err != nil {
			return nil, err
		}
		s.elems = append(s.elems, [2]int{start, end})
	}
	return s, nil
}

// entryEnd returns the last line of the block mapping entry at index idx
// of m's content: the lines after the key that are indented deeper than it,
// up to the last one that is not blank.
func (y *yamlEditor) entryEnd(m *yaml.Node, idx int) int {
	k, v := m.Content[idx], m.Content[idx+1]
	last := max(k.Line-1, yamlMaxLine(v)-1)
	if v.Kind == yaml.ScalarNode {
		if _, end, err := y.scalarSpan(v, false, nil); err == nil {
			last = max(last, y.t.lineOf(end))
		}
	}
	for j := last + 1; j < len(y.t.lines); j++ {
		if y.t.blank(j) {
			continue
		}
		if y.t.spaces(j) > k.Column-1 {
			last = j
			continue
		}
		break
	}
	return min(last, len(y.t.lines)-1)
}

func yamlMaxLine(n *yaml.Node) int {
	m := n.Line
	for _, c := range n.Content {
		m = max(m, yamlMaxLine(c))
	}
	return m
}

func (y *yamlEditor) set(path []string, value any, after string) ([]editSplice, error) {
	m := y.doc.node
	for i := range path {
		k, v, _, err := y.field(m, path[:i+1])
		if err != nil {
			return nil, err
		}
		flow := m.Style&yaml.FlowStyle != 0
		if k == nil {
			a := ""
			if i == len(path)-1 {
				a = after
			}
			return y.insert(m, path[:i], path[i:], value, a)
		}
		if i == len(path)-1 {
			return y.replace(v, flow, path, value)
		}
		switch {
		case v.Kind == yaml.MappingNode:
			m = v
		case isYAMLNull(v):
			return y.fill(k, v, flow, path[:i+1], path[i+1:], value)
		default:
			return nil, y.errorNode(v, path[:i+1], "expected a mapping; edit it by hand")
		}
	}
	return nil, nil
}

// replace writes value over the scalar v, in v's quoting style.
func (y *yamlEditor) replace(v *yaml.Node, flow bool, path []string, value any) ([]editSplice, error) {
	if v.Kind != yaml.ScalarNode {
		return nil, y.errorNode(v, path, "expected a single value, found a mapping or a list; edit it by hand")
	}
	switch x := value.(type) {
	case string:
		if v.ShortTag() == "!!str" && v.Value == x {
			return nil, nil
		}
	case int:
		if n, err := strconv.ParseInt(v.Value, 0, 64); err == nil && v.ShortTag() == "!!int" && n == int64(x) {
			return nil, nil
		}
	}
	start, end, err := y.scalarSpan(v, flow, path)
	if err != nil {
		return nil, err
	}
	text := yamlScalar(value, v.Style)
	if start == end {
		if flow {
			return nil, y.errorNode(v, path, "has no value; edit it by hand")
		}
		text = " " + text // after "key:", which a value must be spaced from
	}
	return []editSplice{{start, end, text}}, nil
}

// fill turns the null value v of key k into a mapping holding names.
func (y *yamlEditor) fill(k, v *yaml.Node, flow bool, path, names []string, value any) ([]editSplice, error) {
	start, end, err := y.scalarSpan(v, flow, path)
	if err != nil {
		return nil, err
	}
	if start == end && !flow {
		// "features:" with nothing after it: add the fields below the key.
		kl := k.Line - 1
		at := y.t.lines[kl].end
		return []editSplice{{at, at, y.t.eol(kl) + y.block(names, value, k.Column-1+y.unit, k.Style, y.t.eol(kl))}}, nil
	}
	text := "{" + yamlFlowEntry(names, value, k.Style) + "}"
	if start == end {
		text = " " + text
	}
	return []editSplice{{start, end, text}}, nil
}

// insert adds names (a field and the fields below it) to the mapping m.
func (y *yamlEditor) insert(m *yaml.Node, path, names []string, value any, after string) ([]editSplice, error) {
	flow := m.Style&yaml.FlowStyle != 0
	if len(m.Content) == 0 {
		if !flow {
			return nil, y.errorNode(m, path, "expected a mapping; edit it by hand")
		}
		s, err := y.flowSeq(m, path)
		if err != nil {
			return nil, err
		}
		return s.insertAfter(0, func(string, bool) string { return yamlFlowEntry(names, value, 0) }), nil
	}
	idx := len(m.Content) - 2
	for i := 0; i+1 < len(m.Content); i += 2 {
		if after != "" && m.Content[i].Value == after {
			idx = i
		}
	}
	ak := m.Content[idx]
	if flow {
		s, err := y.flowSeq(m, path)
		if err != nil {
			return nil, err
		}
		return s.insertAfter(idx/2, func(string, bool) string { return yamlFlowEntry(names, value, ak.Style) }), nil
	}
	last := y.entryEnd(m, idx)
	at := y.t.lines[last].end
	eol := y.t.eol(last)
	return []editSplice{{at, at, eol + y.block(names, value, ak.Column-1, ak.Style, eol)}}, nil
}

// block writes names as nested block mappings, the first at indent.
func (y *yamlEditor) block(names []string, value any, indent int, keyStyle yaml.Style, eol string) string {
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteString(eol)
		}
		b.WriteString(strings.Repeat(" ", indent+i*y.unit))
		b.WriteString(yamlScalar(name, keyStyle))
		b.WriteString(":")
	}
	b.WriteString(" ")
	b.WriteString(yamlScalar(value, 0))
	return b.String()
}

// yamlFlowEntry writes names as nested flow mappings: "a: {b: 10}".
func yamlFlowEntry(names []string, value any, keyStyle yaml.Style) string {
	s := yamlScalar(value, 0)
	for i := len(names) - 1; i >= 0; i-- {
		if i < len(names)-1 {
			s = "{" + s + "}"
		}
		s = yamlScalar(names[i], keyStyle) + ": " + s
	}
	return s
}

// yamlScalar writes a string or int in the given style when the value reads
// back the same in it, else double-quoted.
func yamlScalar(value any, style yaml.Style) string {
	n, ok := value.(int)
	if ok {
		return strconv.Itoa(n)
	}
	s := value.(string)
	switch {
	case style&yaml.DoubleQuotedStyle != 0:
	case style&yaml.SingleQuotedStyle != 0:
		if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
			return "'" + strings.ReplaceAll(s, "'", "''") + "'"
		}
	default:
		if plainYAML(s) {
			return s
		}
	}
	return strconv.Quote(s)
}

// yaml11Bool holds the words YAML 1.1 reads as booleans. yaml.v3 reads them
// as strings, but other tools that read plans (linters, editors) may not.
var yaml11Bool = map[string]bool{"y": true, "yes": true, "n": true, "no": true, "on": true, "off": true}

// plainYAML reports whether s can be written unquoted, in block and flow
// context, and still read as the string s.
func plainYAML(s string) bool {
	if s == "" || strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.' || r == '/')
	}) >= 0 || s[0] == '-' || s[0] == '.' {
		return false
	}
	if yaml11Bool[strings.ToLower(s)] {
		return false
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil || len(n.Content) != 1 {
		return false
	}
	return n.Content[0].ShortTag() == "!!str" && n.Content[0].Value == s
}

func (y *yamlEditor) remove(path []string, prune bool) (bool, []editSplice, error) {
	type entry struct {
		m   *yaml.Node
		idx int
	}
	m := y.doc.node
	var parents []entry
	for i := range path {
		_, v, idx, err := y.field(m, path[:i+1])
		if err != nil {
			return false, nil, err
		}
		if v == nil {
			return false, nil, nil
		}
		if i == len(path)-1 {
			if prune && len(parents) > 0 && len(m.Content) == 2 {
				p := parents[len(parents)-1]
				ss, err := y.removeEntry(p.m, p.idx, path[:i])
				return true, ss, err
			}
			ss, err := y.removeEntry(m, idx, path)
			return true, ss, err
		}
		if v.Kind != yaml.MappingNode {
			return false, nil, nil
		}
		parents = append(parents, entry{m, idx})
		m = v
	}
	return false, nil, nil
}

// removeEntry removes the entry at index idx of m's content.
func (y *yamlEditor) removeEntry(m *yaml.Node, idx int, path []string) ([]editSplice, error) {
	if m.Style&yaml.FlowStyle != 0 {
		s, err := y.flowSeq(m, path[:len(path)-1])
		if err != nil {
			return nil, err
		}
		return s.remove(idx / 2), nil
	}
	k := m.Content[idx]
	start, err := y.offset(k)
	if err != nil || !y.t.firstOnLine(start) {
		return nil, y.errorNode(k, path, "shares its line with another field; edit it by hand")
	}
	last := y.entryEnd(m, idx)
	if idx+2 < len(m.Content) && m.Content[idx+2].Line-1 <= last {
		return nil, y.errorNode(k, path, "shares its lines with another field; edit it by hand")
	}
	return []editSplice{y.t.deleteLines(k.Line-1, last)}, nil
}

func (y *yamlEditor) values(path []string) ([]any, error) {
	v, ok := y.doc.value, true
	for _, name := range path {
		var m map[string]any
		if m, ok = v.(map[string]any); !ok {
			return nil, nil
		}
		if v, ok = m[name]; !ok {
			return nil, nil
		}
	}
	return []any{v}, nil
}

// ---- JSON and CUE ----

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
