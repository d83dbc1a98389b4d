package plan

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The edit API (this file), byte splicing (edit_splice.go), the YAML editor
// (edit_yaml.go) and the JSON/CUE editor (edit_cue.go) rewrite the fields of
// a plan file that commits change (the target, the feature flags and
// annotations) without reformatting anything else: people review these
// commits, so an edit replaces the bytes of the edited values and leaves
// comments, key order, quoting, indentation, flow or block style and line
// endings alone. Files are located with their own parsers (yaml.v3 for
// YAML, CUE's parser for JSON and CUE) and edited by splicing bytes.

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
