package plan

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/token"
)

// compiled is the schema turned into a Go predicate that answers one
// question fast: is this plan certainly valid? Evaluating a plan with CUE
// costs milliseconds; walking it in Go costs microseconds. The predicate is
// conservative: whatever it does not understand (a construct of the schema it
// cannot compile, a value of a type it does not know) makes it answer "not
// proven", and the plan is then evaluated by CUE, which also writes the
// error messages. So a plan is accepted without CUE only when the compiled
// form proves it valid; the fuzz tests check that CUE agrees.
//
// The structural rules (fields, kinds, bounds, patterns, enums) are read from
// the schema's syntax. The rules written with comprehensions and error() are
// read from their @rule attributes, which name a rule this file implements.
type compiled struct {
	root *cnode
}

// cnode is one compiled constraint. A value is accepted when every check in
// the node accepts it.
type cnode struct {
	opaque bool     // cannot be checked here: never proves anything
	kinds  kind     // allowed kinds; 0 means any
	all    []*cnode // conjuncts
	any    []*cnode // disjuncts, when not nil: one must accept
	scalar func(any) bool

	// Structs.
	isStruct bool
	fields   map[string]*cfield
	patterns []cpattern
	rules    []crule

	// Lists.
	isList    bool
	prefix    []*cnode
	elem      *cnode // nil: no more elements allowed
	listRules []crule
}

type cfield struct {
	required bool
	value    *cnode
}

type cpattern struct {
	key, value *cnode
}

// crule is a rule declared with @rule on a struct or a list field.
type crule func(any) bool

// kind is a set of value kinds, as plain Go values decoded from YAML or JSON
// carry them.
type kind uint8

const (
	kindNull kind = 1 << iota
	kindBool
	kindInt
	kindFloat
	kindString
	kindStruct
	kindList
)

func kindOf(v any) kind {
	switch x := v.(type) {
	case nil:
		return kindNull
	case bool:
		return kindBool
	case int, int64:
		return kindInt
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0
		}
		return kindFloat
	case string:
		if !utf8.ValidString(x) {
			return 0
		}
		return kindString
	case map[string]any:
		return kindStruct
	case []any:
		return kindList
	}
	return 0 // unknown (a big integer, a timestamp): never proven valid
}

// compileSchema compiles the definition named def in f.
func compileSchema(f *ast.File, def string) *compiled {
	c := &compiler{defs: map[string]ast.Expr{}, done: map[string]*cnode{}}
	for _, decl := range f.Decls {
		if field, ok := decl.(*ast.Field); ok {
			if name, _, err := ast.LabelName(field.Label); err == nil {
				c.defs[name] = field.Value
			}
		}
	}
	return &compiled{root: c.ref(def)}
}

type compiler struct {
	defs map[string]ast.Expr
	done map[string]*cnode
}

func opaque() *cnode { return &cnode{opaque: true} }

func (c *compiler) ref(name string) *cnode {
	if n, ok := c.done[name]; ok {
		return n
	}
	expr, ok := c.defs[name]
	if !ok {
		return opaque()
	}
	n := &cnode{}
	c.done[name] = n // a recursive definition refers to the node being built
	*n = *c.expr(expr)
	return n
}

func (c *compiler) expr(e ast.Expr) *cnode {
	switch x := e.(type) {
	case *ast.ParenExpr:
		return c.expr(x.X)
	case *ast.Ident:
		switch x.Name {
		case "_":
			return &cnode{}
		case "string":
			return &cnode{kinds: kindString}
		case "int":
			return &cnode{kinds: kindInt}
		case "number":
			return &cnode{kinds: kindInt | kindFloat}
		case "float":
			return &cnode{kinds: kindFloat}
		case "bool":
			return &cnode{kinds: kindBool}
		case "null":
			return &cnode{kinds: kindNull}
		}
		if strings.HasPrefix(x.Name, "#") {
			return c.ref(x.Name)
		}
	case *ast.BasicLit:
		if lit, ok := literalValue(x); ok {
			return &cnode{scalar: func(v any) bool { return equalScalar(v, lit) }}
		}
	case *ast.BinaryExpr:
		switch x.Op {
		case token.AND:
			return &cnode{all: []*cnode{c.expr(x.X), c.expr(x.Y)}}
		case token.OR:
			return &cnode{any: append(c.alternatives(x.X), c.alternatives(x.Y)...)}
		}
	case *ast.UnaryExpr:
		return unary(x)
	case *ast.StructLit:
		return c.structLit(x)
	case *ast.ListLit:
		return c.listLit(x)
	}
	return opaque()
}

func (c *compiler) alternatives(e ast.Expr) []*cnode {
	if b, ok := e.(*ast.BinaryExpr); ok && b.Op == token.OR {
		return append(c.alternatives(b.X), c.alternatives(b.Y)...)
	}
	return []*cnode{c.expr(e)}
}

func unary(x *ast.UnaryExpr) *cnode {
	lit, ok := x.X.(*ast.BasicLit)
	if !ok {
		return opaque()
	}
	val, ok := literalValue(lit)
	if !ok {
		return opaque()
	}
	switch x.Op {
	case token.MAT, token.NMAT:
		s, isString := val.(string)
		re, err := regexp.Compile(s)
		if !isString || err != nil {
			return opaque()
		}
		want := x.Op == token.MAT
		return &cnode{kinds: kindString, scalar: func(v any) bool { return re.MatchString(v.(string)) == want }}
	case token.NEQ:
		return &cnode{scalar: func(v any) bool { return !equalScalar(v, val) }}
	case token.GEQ, token.GTR, token.LEQ, token.LSS:
		bound, isNum := number(val)
		if !isNum {
			return opaque()
		}
		op := x.Op
		return &cnode{kinds: kindInt | kindFloat, scalar: func(v any) bool {
			n, _ := number(v)
			switch op {
			case token.GEQ:
				return n >= bound
			case token.GTR:
				return n > bound
			case token.LEQ:
				return n <= bound
			}
			return n < bound
		}}
	}
	return opaque()
}

func (c *compiler) structLit(x *ast.StructLit) *cnode {
	n := &cnode{isStruct: true, kinds: kindStruct, fields: map[string]*cfield{}}
	var hasRules, hasLogic bool
	for _, decl := range x.Elts {
		switch d := decl.(type) {
		case *ast.Attribute:
			rule, ok := structRule(d)
			if !ok {
				return opaque()
			}
			if rule != nil {
				n.rules = append(n.rules, rule)
				hasRules = true
			}
		case *ast.Field:
			name, _, err := ast.LabelName(d.Label)
			if err != nil {
				list, isPattern := d.Label.(*ast.ListLit)
				if !isPattern || len(list.Elts) != 1 || d.Constraint != token.ILLEGAL {
					return opaque()
				}
				n.patterns = append(n.patterns, cpattern{key: c.expr(list.Elts[0]), value: c.expr(d.Value)})
				continue
			}
			if strings.HasPrefix(name, "_") {
				hasLogic = true // a helper of a rule declared with @rule
				continue
			}
			if strings.HasPrefix(name, "#") {
				continue // a nested definition is not a field of the data
			}
			if d.Constraint != token.OPTION && d.Constraint != token.NOT {
				// A regular field supplies a value when absent; not
				// modelled here.
				return opaque()
			}
			value := c.expr(d.Value)
			for _, a := range d.Attrs {
				rule, ok := fieldRule(a)
				if !ok {
					return opaque()
				}
				if rule != nil {
					value = &cnode{all: []*cnode{value, {scalar: rule, kinds: 0}}}
					hasRules = true
				}
			}
			n.fields[name] = &cfield{required: d.Constraint == token.NOT, value: value}
		case *ast.Comprehension, *ast.LetClause:
			hasLogic = true
		case *ast.CommentGroup:
		default:
			return opaque() // an embedding, an ellipsis: open or merged structs
		}
	}
	if hasLogic && !hasRules {
		return opaque()
	}
	return n
}

func (c *compiler) listLit(x *ast.ListLit) *cnode {
	n := &cnode{isList: true, kinds: kindList}
	for _, e := range x.Elts {
		if ell, ok := e.(*ast.Ellipsis); ok {
			if ell.Type == nil {
				n.elem = &cnode{}
			} else {
				n.elem = c.expr(ell.Type)
			}
			break
		}
		n.prefix = append(n.prefix, c.expr(e))
	}
	return n
}

// ruleArgs parses the body of @rule(a=b|c, if=d).
func ruleArgs(a *ast.Attribute) (map[string]string, bool) {
	body, ok := strings.CutPrefix(a.Text, "@rule(")
	if !ok {
		return nil, true // another tool's attribute
	}
	body, ok = strings.CutSuffix(body, ")")
	if !ok {
		return nil, false
	}
	args := map[string]string{}
	for _, part := range strings.Split(body, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		args[k] = v
	}
	return args, true
}

// structRule compiles a declaration attribute. It returns ok=false for a
// @rule it does not know, and a nil rule for other attributes.
func structRule(a *ast.Attribute) (crule, bool) {
	args, ok := ruleArgs(a)
	if !ok || args == nil {
		return nil, ok
	}
	present := func(m map[string]any, names string) int {
		n := 0
		for _, f := range strings.Split(names, "|") {
			if _, ok := m[f]; ok {
				n++
			}
		}
		return n
	}
	switch {
	case args["oneOf"] != "" && len(args) == 1:
		names := args["oneOf"]
		return func(v any) bool { return present(v.(map[string]any), names) == 1 }, true
	case args["noneOf"] != "" && len(args) == 2 && args["if"] != "":
		names, cond := args["noneOf"], args["if"]
		return func(v any) bool {
			m := v.(map[string]any)
			if _, ok := m[cond]; !ok {
				return true
			}
			return present(m, names) == 0
		}, true
	case args["anyOf"] != "" && len(args) <= 2:
		names, cond := args["anyOf"], args["if"]
		return func(v any) bool {
			m := v.(map[string]any)
			if _, ok := m[cond]; cond != "" && !ok {
				return true
			}
			return present(m, names) >= 1
		}, true
	}
	return nil, false
}

// fieldRule compiles an attribute on a field.
func fieldRule(a *ast.Attribute) (func(any) bool, bool) {
	args, ok := ruleArgs(a)
	if !ok || args == nil {
		return nil, ok
	}
	switch {
	case len(args) == 1 && hasKey(args, "increasing"):
		return func(v any) bool {
			l, ok := v.([]any)
			if !ok {
				return false
			}
			for i := 1; i < len(l); i++ {
				a, okA := number(l[i-1])
				b, okB := number(l[i])
				if !okA || !okB || b <= a {
					return false
				}
			}
			return true
		}, true
	case len(args) == 1 && args["unique"] != "":
		key := args["unique"]
		return func(v any) bool {
			l, ok := v.([]any)
			if !ok {
				return false
			}
			seen := make(map[string]bool, len(l))
			for _, item := range l {
				m, _ := item.(map[string]any)
				s, ok := m[key].(string)
				if !ok || seen[s] {
					return false
				}
				seen[s] = true
			}
			return true
		}, true
	}
	return nil, false
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// accepts reports whether v is certainly valid under n.
func (n *cnode) accepts(v any) bool {
	if n.opaque {
		return false
	}
	k := kindOf(v)
	if k == 0 || (n.kinds != 0 && n.kinds&k == 0) {
		return false
	}
	for _, c := range n.all {
		if !c.accepts(v) {
			return false
		}
	}
	if n.any != nil {
		ok := false
		for _, c := range n.any {
			if c.accepts(v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if n.scalar != nil && !n.scalar(v) {
		return false
	}
	if n.isStruct && !n.acceptsStruct(v.(map[string]any)) {
		return false
	}
	if n.isList && !n.acceptsList(v.([]any)) {
		return false
	}
	return true
}

func (n *cnode) acceptsStruct(m map[string]any) bool {
	for name, f := range n.fields {
		fv, ok := m[name]
		if !ok {
			if f.required {
				return false
			}
			continue
		}
		if !f.value.accepts(fv) {
			return false
		}
	}
	for key, fv := range m {
		if _, declared := n.fields[key]; declared {
			continue
		}
		matched := false
		for _, p := range n.patterns {
			if p.key.accepts(key) {
				if !p.value.accepts(fv) {
					return false
				}
				matched = true
			}
		}
		if !matched {
			return false // definitions are closed
		}
	}
	for _, r := range n.rules {
		if !r(m) {
			return false
		}
	}
	return true
}

func (n *cnode) acceptsList(l []any) bool {
	if len(l) < len(n.prefix) || (n.elem == nil && len(l) > len(n.prefix)) {
		return false
	}
	for i, v := range l {
		c := n.elem
		if i < len(n.prefix) {
			c = n.prefix[i]
		}
		if !c.accepts(v) {
			return false
		}
	}
	return true
}

// literalValue reads a CUE literal as the plain Go value a decoder produces.
func literalValue(x *ast.BasicLit) (any, bool) {
	switch x.Kind {
	case token.STRING:
		s, err := literal.Unquote(x.Value)
		return s, err == nil
	case token.INT:
		n, err := strconv.ParseInt(strings.ReplaceAll(x.Value, "_", ""), 0, 64)
		return int(n), err == nil
	case token.FLOAT:
		f, err := strconv.ParseFloat(x.Value, 64)
		return f, err == nil
	case token.TRUE:
		return true, true
	case token.FALSE:
		return false, true
	case token.NULL:
		return nil, true
	}
	return nil, false
}

// number returns a plain number as a float64, whatever its Go type; a NaN
// is not one (two NaNs are then equal only as the same text).
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, !math.IsNaN(x)
	}
	return 0, false
}

// equalScalar compares two plain scalars the way CUE unifies them: an int
// and a float never unify.
func equalScalar(a, b any) bool {
	if kindOf(a) != kindOf(b) {
		return false
	}
	switch x := a.(type) {
	case int, int64, float64:
		fa, _ := number(x)
		fb, _ := number(b)
		return fa == fb
	}
	return a == b
}

// accepts reports whether the plain value v is certainly a valid plan.
func (c *compiled) accepts(v any) bool { return c.root.accepts(v) }

// literalData converts a CUE or JSON syntax tree that holds only literal data
// into plain Go values. It answers false for anything else (references,
// expressions, a field declared twice), which CUE must then evaluate.
func literalData(e ast.Node) (any, bool) {
	switch x := e.(type) {
	case *ast.File:
		return literalData(&ast.StructLit{Elts: topLevel(x)})
	case *ast.StructLit:
		m := make(map[string]any, len(x.Elts))
		for _, decl := range x.Elts {
			switch d := decl.(type) {
			case *ast.Field:
				name, isIdent, err := ast.LabelName(d.Label)
				if err != nil || d.Constraint != token.ILLEGAL || len(d.Attrs) > 0 || d.Alias != nil {
					return nil, false
				}
				if _, dup := m[name]; dup || (isIdent && (strings.HasPrefix(name, "_") || strings.HasPrefix(name, "#"))) {
					return nil, false
				}
				v, ok := literalData(d.Value)
				if !ok {
					return nil, false
				}
				m[name] = v
			case *ast.Package, *ast.CommentGroup:
			default:
				return nil, false
			}
		}
		return m, true
	case *ast.ListLit:
		l := make([]any, len(x.Elts))
		for i, e := range x.Elts {
			v, ok := literalData(e)
			if !ok {
				return nil, false
			}
			l[i] = v
		}
		return l, true
	case *ast.BasicLit:
		return literalValue(x)
	case *ast.Ident:
		return nil, false
	}
	return nil, false
}

func (c *compiled) String() string {
	return fmt.Sprintf("compiled schema (opaque root: %v)", c.root.opaque)
}

// child returns the constraint on the field or element seg of values n
// accepts, or nil when n says nothing about it.
func (n *cnode) child(seg string) *cnode {
	if n.isStruct {
		if f, ok := n.fields[seg]; ok {
			return f.value
		}
		for _, p := range n.patterns {
			if p.key.accepts(seg) {
				return p.value
			}
		}
	}
	if n.isList {
		if i, err := strconv.Atoi(seg); err == nil {
			if i < len(n.prefix) {
				return n.prefix[i]
			}
			return n.elem
		}
	}
	for _, c := range n.all {
		if x := c.child(seg); x != nil {
			return x
		}
	}
	return nil
}

// kindSet returns the kinds n accepts; 0 means any.
func (n *cnode) kindSet() kind {
	k := n.kinds
	for _, c := range n.all {
		if ck := c.kindSet(); ck != 0 {
			if k == 0 {
				k = ck
			} else {
				k &= ck
			}
		}
	}
	if n.any != nil {
		var u kind
		for _, c := range n.any {
			ck := c.kindSet()
			if ck == 0 {
				return k
			}
			u |= ck
		}
		if k == 0 {
			k = u
		} else {
			k &= u
		}
	}
	return k
}

// kindAt returns the kinds the schema accepts at path; 0 when it does not
// say or the path is not in the schema.
func (c *compiled) kindAt(path []string) kind {
	n := c.root
	for _, seg := range path {
		if n = n.child(seg); n == nil {
			return 0
		}
	}
	return n.kindSet()
}

// kindWords says in words what kinds k are.
func kindWords(k kind) string {
	var words []string
	for _, w := range []struct {
		k    kind
		word string
	}{{kindStruct, "a mapping"}, {kindList, "a list"}, {kindString, "a string"}, {kindInt, "an integer"}, {kindFloat, "a number"}, {kindBool, "true or false"}, {kindNull, "null"}} {
		if k&w.k != 0 {
			words = append(words, w.word)
		}
	}
	if k&(kindInt|kindFloat) == kindInt|kindFloat {
		words = slicesDelete(words, "an integer")
	}
	return strings.Join(words, " or ")
}

func slicesDelete(words []string, w string) []string {
	out := words[:0]
	for _, x := range words {
		if x != w {
			out = append(out, x)
		}
	}
	return out
}

// missing returns the paths of required fields absent from v, walking the
// parts of v whose shape n knows. CUE leaves these out when a plan has other
// errors, and a user fixing a plan wants them all at once.
func (n *cnode) missing(v any, path []string) [][]string {
	var out [][]string
	switch x := v.(type) {
	case map[string]any:
		for _, s := range n.structs() {
			for name, f := range s.fields {
				fv, ok := x[name]
				if !ok {
					if f.required {
						out = append(out, append(slicesClip(path), name))
					}
					continue
				}
				out = append(out, f.value.missing(fv, append(slicesClip(path), name))...)
			}
			for key, fv := range x {
				if _, declared := s.fields[key]; declared {
					continue
				}
				for _, p := range s.patterns {
					if p.key.accepts(key) {
						out = append(out, p.value.missing(fv, append(slicesClip(path), key))...)
					}
				}
			}
		}
	case []any:
		for _, l := range n.lists() {
			for i, e := range x {
				c := l.elem
				if i < len(l.prefix) {
					c = l.prefix[i]
				}
				if c != nil {
					out = append(out, c.missing(e, append(slicesClip(path), strconv.Itoa(i)))...)
				}
			}
		}
	}
	return out
}

// structs and lists return the struct and list constraints of n and its
// conjuncts.
func (n *cnode) structs() []*cnode {
	var out []*cnode
	if n.isStruct {
		out = append(out, n)
	}
	for _, c := range n.all {
		out = append(out, c.structs()...)
	}
	return out
}

func (n *cnode) lists() []*cnode {
	var out []*cnode
	if n.isList {
		out = append(out, n)
	}
	for _, c := range n.all {
		out = append(out, c.lists()...)
	}
	return out
}

func slicesClip(s []string) []string { return s[:len(s):len(s)] }
