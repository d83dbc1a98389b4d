package plan

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var editFuzzFormats = []string{".yaml", ".json", ".cue"}

// FuzzApplyEdits feeds arbitrary files and edits to ApplyEdits. It must
// never panic, and its errors must name the file. When the file is a valid
// plan, the edit is one that keeps it valid (a position of its timeline, a
// flag it has or a new one); when ApplyEdits succeeds, the result must
// validate, hold the edit, and hold nothing else changed.
//
// The seeds are the committed corpus in testdata/fuzz/FuzzApplyEdits: small
// plans in every style, and files that ApplyEdits must refuse. They are kept
// small because the fuzzer minimizes every new input it finds, which for a
// plan the size of the examples takes most of a minute; the examples
// themselves are edited in TestApplyEditsExamples.
func FuzzApplyEdits(f *testing.F) {
	v, err := NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, format, sel uint8) {
		path := "fuzz" + editFuzzFormats[int(format)%len(editFuzzFormats)]
		before, verr := v.ValidateOne(Source{Path: path, Data: data})
		edit, check := fuzzEdit(before, sel)
		out, err := ApplyEdits(path, data, edit)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if verr != nil {
			// Not a valid plan: the result must still parse if the
			// original did.
			if _, err := newEditor(path, FormatOf(path), data); err == nil {
				if _, err := newEditor(path, FormatOf(path), out); err != nil {
					t.Fatalf("%v: result does not parse: %v\n%s", edit, err, out)
				}
			}
			return
		}
		after, err := v.ValidateOne(Source{Path: path, Data: out})
		if err != nil {
			t.Fatalf("%v: result does not validate: %v\n--- before\n%s\n--- after\n%s", edit, err, data, out)
		}
		check(t, before, after)
	})
}

// fuzzEdit picks an edit by sel: for a valid plan p, one that keeps it
// valid, with a check of the edited plan; else any edit.
func fuzzEdit(p *Plan, sel uint8) (FileEdit, func(t *testing.T, before, after *Plan)) {
	n := int(sel / 4)
	if p == nil {
		edits := []FileEdit{
			SetTarget(Target{Phase: "canary", Percentage: editPct(n)}),
			SetTarget(Target{Phase: "full"}),
			SetFeature("flag", n),
			RemoveFeature("flag"),
		}
		return edits[sel%4], nil
	}
	// unchanged checks that the plans differ in nothing but what f resets.
	unchanged := func(t *testing.T, before, after *Plan, f func(s *Spec)) {
		t.Helper()
		a, b := before.Spec, after.Spec
		f(&a)
		f(&b)
		if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(before.Metadata, after.Metadata) {
			t.Fatalf("more than the edited field changed:\n%+v\n%+v", before, after)
		}
	}
	noTarget := func(s *Spec) { s.Target = Target{} }
	noFeatures := func(s *Spec) { s.Features = nil }
	flags := slices.Sorted(maps.Keys(p.Spec.Features))
	switch sel % 4 {
	case 0, 1:
		var target Target
		if sel%4 == 0 {
			steps := p.Timeline(Last)
			s := steps[n%len(steps)]
			target.Phase = s.Phase
			if s.Kind == PhaseSteps {
				target.Percentage = editPct(s.Percentage)
			}
		} else {
			target.Phase = p.Spec.Phases[n%len(p.Spec.Phases)].Name
		}
		want := *p
		want.Spec.Target = target
		return SetTarget(target), func(t *testing.T, before, after *Plan) {
			if got := after.TargetPosition(); got != want.TargetPosition() || !reflect.DeepEqual(after.Spec.Target, target) {
				t.Fatalf("target is %+v at %v, want %+v at %v", after.Spec.Target, got, target, want.TargetPosition())
			}
			unchanged(t, before, after, noTarget)
		}
	case 2:
		name := "fuzz_flag"
		if i := n % (len(flags) + 1); i < len(flags) {
			name = flags[i]
		}
		value := n % 101
		return SetFeature(name, value), func(t *testing.T, before, after *Plan) {
			want := maps.Clone(before.Spec.Features)
			if want == nil {
				want = map[string]int{}
			}
			want[name] = value
			if !reflect.DeepEqual(after.Spec.Features, want) {
				t.Fatalf("features are %v, want %v", after.Spec.Features, want)
			}
			unchanged(t, before, after, noFeatures)
		}
	}
	name := "fuzz_flag"
	if len(flags) > 0 {
		name = flags[n%len(flags)]
	}
	return RemoveFeature(name), func(t *testing.T, before, after *Plan) {
		want := maps.Clone(before.Spec.Features)
		delete(want, name)
		if len(want) == 0 {
			want = nil
		}
		if !reflect.DeepEqual(after.Spec.Features, want) {
			t.Fatalf("features are %v, want %v", after.Spec.Features, want)
		}
		unchanged(t, before, after, noFeatures)
	}
}
