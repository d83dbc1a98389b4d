package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// The YAML editor: yaml.v3 locates the nodes, whose bytes are spliced.

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
