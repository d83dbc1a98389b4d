package plan

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"

	"github.com/hal9ai/hal9-migrate/plan/plantest"
	"github.com/hal9ai/hal9-migrate/schema"
)

// TestCompiledSchemaIsComplete guards speed: a definition the compiler
// cannot read makes every plan go through CUE.
func TestCompiledSchemaIsComplete(t *testing.T) {
	f, err := schema.File()
	if err != nil {
		t.Fatal(err)
	}
	c := &compiler{defs: map[string]ast.Expr{}, done: map[string]*cnode{}}
	for _, decl := range f.Decls {
		if field, ok := decl.(*ast.Field); ok {
			name, _, _ := ast.LabelName(field.Label)
			c.defs[name] = field.Value
		}
	}
	for name := range c.defs {
		if opaqueWithin(c.ref(name), map[*cnode]bool{}) {
			t.Errorf("%s: the compiled schema cannot check it; every plan would be evaluated by CUE", name)
		}
	}
}

func opaqueWithin(n *cnode, seen map[*cnode]bool) bool {
	if n == nil || seen[n] {
		return false
	}
	seen[n] = true
	if n.opaque {
		return true
	}
	kids := append(append([]*cnode{}, n.all...), n.any...)
	kids = append(kids, n.prefix...)
	kids = append(kids, n.elem)
	for _, f := range n.fields {
		kids = append(kids, f.value)
	}
	for _, p := range n.patterns {
		kids = append(kids, p.key, p.value)
	}
	for _, k := range kids {
		if opaqueWithin(k, seen) {
			return true
		}
	}
	return false
}

// cueJudges evaluates a document with CUE alone, as `cue vet` would.
func cueJudges(t testing.TB, v *Validator, doc *document) error {
	t.Helper()
	e := v.get()
	defer v.put(e)
	data := doc.build(e.ctx)
	if err := data.Err(); err != nil {
		return err
	}
	return e.schema.Unify(data).Validate(cue.Concrete(true))
}

// TestCompiledAgreesWithCUE checks both directions on plans that are valid
// (the compiled check must prove them, or vet is slow) and on the invalid
// plans of TestInvalidPlans (the compiled check must never prove them).
func TestCompiledAgreesWithCUE(t *testing.T) {
	v := newValidator(t)
	var sources []Source
	dir := t.TempDir()
	paths, err := plantest.WriteDir(dir, 200, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		sources = append(sources, Source{Path: p, Data: mustRead(t, p)})
	}
	for _, f := range []string{"testdata/base.yaml", "testdata/base.json", "testdata/base.cue"} {
		sources = append(sources, Source{Path: f, Data: mustRead(t, f)})
	}
	examples, _ := filepath.Glob("../examples/plans/*.*")
	layers, _ := filepath.Glob("../examples/plans/*/*")
	examples = append(examples, layers...)
	for _, f := range examples {
		sources = append(sources, Source{Path: f, Data: mustRead(t, f)})
	}
	for _, src := range sources {
		doc, value := parseForTest(t, src)
		if doc == nil {
			continue
		}
		quick := value != nil && v.quick.accepts(value)
		cueErr := cueJudges(t, v, doc)
		if quick && cueErr != nil {
			t.Errorf("%s: compiled check accepts what CUE rejects: %v", src.Path, cueErr)
		}
		if !quick && cueErr == nil && FormatOf(src.Path) != FormatCUE {
			t.Errorf("%s: valid plan not proven by the compiled check (slow path)", src.Path)
		}
	}

	base := readBase(t)
	r := rand.New(rand.NewPCG(9, 9))
	lines := strings.Split(base, "\n")
	mutations := 0
	for range 400 {
		// Drop or duplicate a random line, or change a random character:
		// most results are invalid in some way.
		l := append([]string(nil), lines...)
		i := r.IntN(len(l))
		switch r.IntN(3) {
		case 0:
			l = append(l[:i], l[i+1:]...)
		case 1:
			l = append(l[:i+1], l[i:]...)
		default:
			if len(l[i]) > 0 {
				b := []byte(l[i])
				b[r.IntN(len(b))] = "az09-_:.{}[]\" "[r.IntN(14)]
				l[i] = string(b)
			}
		}
		src := Source{Path: fmt.Sprintf("m%d.yaml", mutations), Data: []byte(strings.Join(l, "\n"))}
		mutations++
		doc, value := parseForTest(t, src)
		if doc == nil {
			continue
		}
		if v.quick.accepts(value) {
			if err := cueJudges(t, v, doc); err != nil {
				t.Errorf("compiled check accepts what CUE rejects:\n%s\n%v", src.Data, err)
			}
		}
	}
}

func parseForTest(t testing.TB, src Source) (*document, any) {
	var doc *document
	var errs Errors
	switch FormatOf(src.Path) {
	case FormatYAML:
		doc, errs = parseYAML(src.Path, src.Data, DefaultLimits().MaxNodes)
	default:
		doc, errs = parseCUE(src.Path, src.Data, FormatOf(src.Path))
	}
	if doc == nil || len(errs) > 0 {
		return nil, nil
	}
	value, ok := doc.plain()
	if !ok {
		return doc, nil
	}
	return doc, value
}
