package plan

import (
	"bytes"
	"fmt"
	"slices"
)

// Byte splicing: the text of a plan file as lines, and the splices that
// replace parts of it, shared by the YAML and the JSON/CUE editors.

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
