package plan_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

// fleetSources generates n valid plan files, as a Git snapshot hands them
// over.
func fleetSources(n int) []plan.Source {
	r := rand.New(rand.NewPCG(7, 7))
	out := make([]plan.Source, n)
	for i := range out {
		name := fmt.Sprintf("plan-%04d", i)
		out[i] = plan.Source{Path: "plans/" + name + ".yaml", Data: plantest.Generate(r, name), Discovered: true}
	}
	return out
}

// withTarget returns src with its target set to phase, as a person's edit
// would.
func withTarget(t *testing.T, src plan.Source, phase string) plan.Source {
	t.Helper()
	data, err := plan.ApplyEdits(src.Path, src.Data, plan.SetTarget(plan.Target{Phase: phase}))
	if err != nil {
		t.Fatal(err)
	}
	src.Data = data
	return src
}

// TestCacheParsesOnlyChanges checks the incremental validation: a file
// changed is parsed again and read anew, one unchanged is not parsed, one
// removed leaves the cache, one whose content comes back to an earlier
// version reads as that version, and a broken edit is reported while the
// other files stand. Every outcome is the one Validate gives without a
// cache.
func TestCacheParsesOnlyChanges(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := plan.NewCache(0)
	files := fleetSources(20)
	same := func(step string, files []plan.Source, checks int64) *plan.Set {
		t.Helper()
		before := c.Checks()
		got := v.ValidateCached(c, files)
		if n := c.Checks() - before; n != checks {
			t.Errorf("%s: %d files parsed, want %d", step, n, checks)
		}
		want := v.Validate(files)
		if got.Files != want.Files || got.Errors.Error() != want.Errors.Error() || len(got.Plans) != len(want.Plans) {
			t.Fatalf("%s: cached %d files, %d plans, errors %q; uncached %d, %d, %q", step, got.Files, len(got.Plans), got.Errors.Error(),
				want.Files, len(want.Plans), want.Errors.Error())
		}
		for i := range got.Plans {
			if g, w := got.Plans[i], want.Plans[i]; g.Metadata.Name != w.Metadata.Name || g.File != w.File || g.TargetPosition() != w.TargetPosition() {
				t.Fatalf("%s: plan %d is %s (%s) at %s, want %s (%s) at %s", step, i, g.Metadata.Name, g.File, g.TargetPosition(),
					w.Metadata.Name, w.File, w.TargetPosition())
			}
		}
		if c.Len() != len(files) {
			t.Errorf("%s: the cache holds %d files, want %d", step, c.Len(), len(files))
		}
		return got
	}
	first := same("first", files, 20)
	again := same("unchanged", files, 0)
	if first.Plans[3] != again.Plans[3] {
		t.Error("an unchanged file's plan was decoded again")
	}

	original := files[5]
	files[5] = withTarget(t, original, "full")
	set := same("one file changed", files, 1)
	if p := set.Lookup("plan-0005"); p == nil || p.Spec.Target.Phase != "full" {
		t.Fatalf("the changed plan reads %+v", p)
	}

	files[5] = original
	set = same("changed back", files, 1)
	if p := set.Lookup("plan-0005"); p == nil || p.TargetPosition() != first.Lookup("plan-0005").TargetPosition() {
		t.Fatalf("the plan changed back reads %+v", p)
	}

	broken := files[6]
	broken.Data = []byte(strings.Replace(string(broken.Data), "apiVersion", "apiVersoin", 1))
	files[6] = broken
	set = same("broken", files, 1)
	if set.Lookup("plan-0006") != nil || len(set.Errors) == 0 || set.Errors[0].File != broken.Path {
		t.Fatalf("the broken file: plan %v, errors %v", set.Lookup("plan-0006"), set.Errors)
	}
	same("still broken", files, 0)

	files = append(files[:7], files[8:]...)
	set = same("one file removed", files, 0)
	if set.Lookup("plan-0007") != nil {
		t.Fatal("the removed file's plan is still there")
	}

	// A file copied under another name claims a name twice: the files
	// relate to each other, which is checked every call.
	dup := files[0]
	dup.Path = "plans/zz-copy.yaml"
	set = same("a name used twice", append(files, dup), 1)
	if !strings.Contains(set.Errors.Error(), "duplicate plan name") {
		t.Fatalf("no duplicate name reported: %v", set.Errors)
	}
}

// TestCacheBounded checks that a cache smaller than the tree holds no more
// than its bound and still gives every file's right outcome.
func TestCacheBounded(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := plan.NewCache(5)
	files := fleetSources(12)
	for round := range 3 {
		if round == 2 {
			files[10] = withTarget(t, files[10], "full")
		}
		set := v.ValidateCached(c, files)
		if len(set.Plans) != 12 || len(set.Errors) > 0 {
			t.Fatalf("round %d: %d plans, errors %v", round, len(set.Plans), set.Errors)
		}
		if c.Len() > 5 {
			t.Fatalf("round %d: the cache holds %d files, over its bound of 5", round, c.Len())
		}
	}
	if p := v.ValidateCached(c, files).Lookup("plan-0010"); p.Spec.Target.Phase != "full" {
		t.Fatalf("the changed plan past the bound reads %+v", p.Spec.Target)
	}
	// 12 the first round, then the 7 it could not keep each round.
	if got, want := c.Checks(), int64(12+7+7+7); got != want {
		t.Errorf("%d files parsed, want %d", got, want)
	}
}

// TestCacheByBlob checks that a source its reader left unread, naming its
// content by blob, is answered from the cache, and refused when the cache
// does not hold it rather than taken for an empty file.
func TestCacheByBlob(t *testing.T) {
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := plan.NewCache(0)
	files := fleetSources(3)
	for i := range files {
		files[i].Blob = fmt.Sprintf("blob%d", i)
	}
	if set := v.ValidateCached(c, files); len(set.Plans) != 3 {
		t.Fatalf("first: %v", set.Errors)
	}
	unread := make([]plan.Source, len(files))
	for i, f := range files {
		unread[i] = plan.Source{Path: f.Path, Blob: f.Blob, Size: int64(len(f.Data)), Discovered: true}
	}
	before := c.Checks()
	if set := v.ValidateCached(c, unread); len(set.Plans) != 3 || c.Checks() != before {
		t.Fatalf("unread, known blobs: %d plans, %d parsed, errors %v", len(set.Plans), c.Checks()-before, set.Errors)
	}
	unread[1].Blob = "another"
	set := v.ValidateCached(c, unread)
	if len(set.Plans) != 2 || len(set.Errors) != 1 || !strings.Contains(set.Errors[0].Message, "not read") {
		t.Fatalf("unread, unknown blob: %d plans, errors %v", len(set.Plans), set.Errors)
	}
}
