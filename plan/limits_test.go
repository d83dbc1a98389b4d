package plan

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan/plantest"
)

func TestByteSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want ByteSize
	}{
		{"1048576", 1 << 20}, {"1MiB", 1 << 20}, {"1 MiB", 1 << 20}, {"512KiB", 512 << 10},
		{"1.5GiB", 3 << 29}, {"100B", 100}, {" 64MiB ", 64 << 20}, {"0", 0},
	} {
		got, err := ParseByteSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "1MB", "1.5", "MiB", "-", "1e3KiB x", "9999999999999GiB"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
	for _, tt := range []struct {
		in   ByteSize
		want string
	}{
		{1 << 20, "1 MiB"}, {64 << 20, "64 MiB"}, {20_000_000, "19.1 MiB"}, {1536, "1.5 KiB"}, {999, "999 B"}, {0, "0 B"},
	} {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%d: %q, want %q", tt.in, got, tt.want)
		}
	}
	var s ByteSize
	if err := s.UnmarshalText([]byte("2MiB")); err != nil || s != 2<<20 {
		t.Errorf("UnmarshalText: %d, %v", s, err)
	}
	if b, _ := s.MarshalText(); string(b) != "2MiB" {
		t.Errorf("MarshalText: %s", b)
	}
}

func TestLimitsCheck(t *testing.T) {
	if err := (Limits{}).Check(); err != nil {
		t.Errorf("zero limits (the defaults): %v", err)
	}
	if err := DefaultLimits().Check(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tt := range []struct {
		l    Limits
		want string
	}{
		{Limits{MaxFileSize: -1}, "plans.maxFileSize: -1 B is not a positive size"},
		{Limits{MaxTotalSize: 1 << 10}, "plans.maxTotalSize: 1 KiB is less than plans.maxFileSize (1 MiB)"},
		{Limits{MaxNodes: -5}, "plans.maxNodes: -5 is not a positive number"},
		{Limits{CUETimeout: -time.Second}, "plans.cueTimeout: -1s is not a positive duration"},
		{Limits{CUEMemory: 1 << 20}, "plans.cueMemory: 1 MiB is less than the 16 MiB an evaluation needs"},
	} {
		if err := tt.l.Check(); err == nil || err.Error() != tt.want {
			t.Errorf("%+v: %v, want %s", tt.l, err, tt.want)
		}
		if _, err := NewValidator(WithLimits(tt.l)); err == nil || err.Error() != tt.want {
			t.Errorf("NewValidator(%+v): %v, want %s", tt.l, err, tt.want)
		}
	}
}

// TestSizeLimits checks that a file over the per-file limit, a file its
// reader left unread, and the files past the total in path order are
// refused by their size, each with an error naming it, and the others are
// read as usual.
func TestSizeLimits(t *testing.T) {
	v, err := NewValidator(WithLimits(Limits{MaxFileSize: 3 << 10, MaxTotalSize: 8 << 10}))
	if err != nil {
		t.Fatal(err)
	}
	plan := func(name string, size int) []byte {
		b := strings.Replace(readBase(t), "name: base", "name: "+name, 1)
		return []byte(b + "# " + strings.Repeat("x", size-len(b)-3) + "\n")
	}
	sources := []Source{ // out of order: the total is counted in path order
		{Path: "d.yaml", Data: plan("d", 2<<10)},
		{Path: "big.yaml", Data: plan("big", 3<<10+1)},
		{Path: "a.yaml", Data: plan("a", 3<<10)},
		{Path: "unread.yaml", Size: 20_000_000},
		{Path: "c.yaml", Data: plan("c", 3<<10)},
		{Path: "e.yaml", Data: plan("e", 1100)},
		{Path: "b.yaml", Data: plan("b", 1<<10)},
	}
	set := v.Validate(sources)
	want := `big.yaml: 3.0 KiB is over the 3 KiB limit for one plan file (limit: plans.maxFileSize)
d.yaml: not read: the plan files up to this one, in path order, come to 9 KiB, over the 8 KiB limit for all plan files together (limit: plans.maxTotalSize)
e.yaml: not read: the plan files up to this one, in path order, come to 10.1 KiB, over the 8 KiB limit for all plan files together (limit: plans.maxTotalSize)
unread.yaml: 19.1 MiB is over the 3 KiB limit for one plan file (limit: plans.maxFileSize)`
	if got := set.Errors.Error(); got != want {
		t.Errorf("errors:\n%s\nwant\n%s", got, want)
	}
	if got := strings.Join(names(set.Plans), " "); got != "a b c" || set.Files != len(sources) {
		t.Errorf("plans %s of %d files, want a b c of %d", got, set.Files, len(sources))
	}

	// A reader with a lower limit than the Validator's: the file is
	// refused all the same, since there is nothing to validate.
	_, err = v.ValidateOne(Source{Path: "small.yaml", Size: 2 << 10})
	if want := "small.yaml: not read: 2 KiB is over the limit for one plan file of the reader that loaded it (limit: plans.maxFileSize)"; err == nil || err.Error() != want {
		t.Errorf("ValidateOne: %v, want %s", err, want)
	}
	if _, err := v.ValidateOne(Source{Path: "a.yaml", Data: plan("a", 3<<10)}); err != nil {
		t.Errorf("a plan at the limit: %v", err)
	}
}

// TestLoadMeasuresBeforeReading loads a directory holding a sparse file of
// 4 GiB: it must be refused by its size, not read.
func TestLoadMeasuresBeforeReading(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.yaml")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 30); err != nil {
		t.Skipf("this file system cannot make a sparse file: %v", err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "ok.yaml"), []byte(readBase(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	v := newValidator(t)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	set, _ := v.Load(dir)
	runtime.ReadMemStats(&after)
	want := huge + ": 4 GiB is over the 1 MiB limit for one plan file (limit: plans.maxFileSize)"
	if set.Errors.Error() != want || len(set.Plans) != 1 || set.Files != 2 {
		t.Errorf("errors %v, %d plans of %d files, want %s and one plan of 2 files", set.Errors, len(set.Plans), set.Files, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("Load allocated %d MiB: it read the file it refuses", alloc>>20)
	}
	// Named on its own, the same.
	if _, err := v.Load(huge); err == nil || err.Error() != want {
		t.Errorf("Load(%s): %v", huge, err)
	}
}

// TestYAMLBudget checks that alias and merge-key bombs stop at the node
// budget, that a file's apiVersion and kind are judged before anything is
// expanded, and that an ordinary plan with aliases is unaffected.
func TestYAMLBudget(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name       string
		data       []byte
		discovered bool
		want       string
	}{
		{"nested aliases", plantest.AliasBomb("MigrationPlan", 9, 10), false,
			`p.yaml:9:38: x.4.7: YAML aliases expand past 100000 nodes (limit: plans.maxNodes)`},
		{"nested merge keys", plantest.MergeBomb(9, 10), false,
			`p.yaml:9:45: x.4: YAML aliases expand past 100000 nodes (limit: plans.maxNodes)`},
		{"another kind, named", plantest.AliasBomb("NotAPlan", 9, 10), false,
			`p.yaml:2:7: kind: invalid value "NotAPlan" (expected "MigrationPlan")`},
		{"another kind, discovered", plantest.AliasBomb("NotAPlan", 9, 10), true, ``},
		{"another apiVersion", []byte(strings.Replace(string(plantest.AliasBomb("MigrationPlan", 9, 10)), "migrate.hal9.ai/v1", "v2", 1)), false,
			`p.yaml:1:13: apiVersion: invalid value "v2" (expected "migrate.hal9.ai/v1")`},
		{"many nodes, no alias", []byte("kind: MigrationPlan\nspec:\n  features: [" + strings.Repeat("0,", 150_000) + "0]\n"), false,
			`p.yaml:3:200006: spec.features.99996: YAML document has more than 100000 nodes (limit: plans.maxNodes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			set := v.Validate([]Source{{Path: "p.yaml", Data: tt.data, Discovered: tt.discovered}})
			if got := set.Errors.Error(); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
			if tt.discovered && set.Files != 0 {
				t.Errorf("a discovered file of another kind was not skipped")
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}

	// A lower budget, and a plan whose aliases stay within it.
	small, err := NewValidator(WithLimits(Limits{MaxNodes: 200}))
	if err != nil {
		t.Fatal(err)
	}
	aliased := strings.NewReplacer("soak: 1h", "soak: &soak 1h", "soak: 2h", "soak: *soak",
		`{image: "migrator:1", timeout: 30m}`, `&job {image: "migrator:1", timeout: 30m}`,
		`{run: {image: "migrator:1", command: [check]}}`, `{run: {<<: *job, command: [check]}}`).Replace(readBase(t))
	p, err := small.ValidateOne(Source{Path: "p.yaml", Data: []byte(aliased)})
	if err != nil {
		t.Fatalf("a plan within the budget: %v", err)
	}
	if p.Spec.Phases[1].Soak.Std() != time.Hour || p.Spec.Verify["integrity"].Run.Timeout.Std() != 30*time.Minute {
		t.Errorf("aliases not followed: %+v", p.Spec)
	}
	if _, err := small.ValidateOne(Source{Path: "p.yaml", Data: plantest.AliasBomb("MigrationPlan", 3, 10)}); err == nil ||
		!strings.HasSuffix(err.Error(), "YAML aliases expand past 200 nodes (limit: plans.maxNodes)") {
		t.Errorf("1,000 strings over a budget of 200: %v", err)
	}
}

// TestReadAtMost reads files whose size changed since they were measured:
// never more than the limit and a byte.
func TestReadAtMost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(strings.Repeat("x", 3000)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		size, limit int64
		want        int
	}{{3000, 3000, 3000}, {10, 1000, 1001}, {5000, 10000, 3000}, {0, 4000, 3000}, {3000, 2999, 3000}} {
		data, err := readAtMost(path, tt.size, tt.limit)
		if err != nil || len(data) != tt.want {
			t.Errorf("measured %d, limit %d: read %d bytes, %v; want %d", tt.size, tt.limit, len(data), err, tt.want)
		}
	}
}
