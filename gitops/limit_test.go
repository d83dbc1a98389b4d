package gitops

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
)

// TestMaxFileBytes checks that no file over the limit is read: a plan file
// that large is reported by its size, and any other read of it fails.
func TestMaxFileBytes(t *testing.T) {
	big := planYAML("big", "canary", 10) + "# " + strings.Repeat("x", 600) + "\n"
	files := map[string]string{
		"plans/hal9.yaml":  planYAML("hal9", "canary", 10),
		"plans/big.yaml":   big,
		"status/big.yaml":  big,
		"status/hal9.yaml": "phase: canary\n",
	}
	dir := bare(t, t.TempDir(), "r.git", files)
	ctx := testContext(t, time.Minute)
	r, err := Open(ctx, Options{URL: dir, MaxFileBytes: 500})
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []plan.Source{
		{Path: "plans/big.yaml", Discovered: true, Size: int64(len(big))},
		{Path: "plans/hal9.yaml", Data: []byte(files["plans/hal9.yaml"]), Discovered: true},
	}
	if !sameSources(s.Files, want) || s.Files[0].Data != nil || s.Files[0].Size != int64(len(big)) || s.Files[1].Size != 0 {
		t.Errorf("Files = %+v, want %+v", s.Files, want)
	}
	if _, err := r.ReadFile("status/big.yaml"); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "over the limit of 500") {
		t.Errorf("ReadFile of a file over the limit: %v, want ErrTooLarge", err)
	}
	if data, err := r.ReadFile("status/hal9.yaml"); err != nil || string(data) != files["status/hal9.yaml"] {
		t.Errorf("ReadFile of a small file = %q, %v", data, err)
	}
	_, err = r.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
		if _, err := read("status/big.yaml"); err != nil {
			return nil, err
		}
		return map[string][]byte{"status/big.yaml": []byte("small again\n")}, nil
	}})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Commit reading a file over the limit: %v, want ErrTooLarge", err)
	}
	// The plans path naming the large file itself.
	r2, err := Open(ctx, Options{URL: dir, Path: "plans/big.yaml", MaxFileBytes: 500})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r2.Sync(ctx); err != nil || len(s.Files) != 1 || s.Files[0].Data != nil || s.Files[0].Size != int64(len(big)) || !s.Files[0].Discovered {
		t.Errorf("Sync of the large file alone = %+v, %v", s.Files, err)
	}
	if _, err := Open(ctx, Options{URL: dir, MaxFileBytes: -1}); err == nil {
		t.Error("Open with a negative MaxFileBytes succeeded")
	}
}

// TestMaxFileBytesLocal checks the default limit where plans are read from
// a local repository: ReadPlans and the commands' Change.
func TestMaxFileBytesLocal(t *testing.T) {
	big := planYAML("big", "canary", 10) + "# " + strings.Repeat("x", DefaultMaxFileBytes) + "\n"
	work := newLocal(t, map[string]string{"plans/hal9.yaml": planYAML("hal9", "canary", 10), "plans/big.yaml": big})
	for _, p := range []string{"plans", filepath.Join("plans", "big.yaml")} {
		sources, err := ReadPlans(work, "HEAD", p)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, s := range sources {
			if strings.HasSuffix(s.Path, "big.yaml") {
				found = true
				if s.Data != nil || s.Size != int64(len(big)) {
					t.Errorf("ReadPlans(%s): %s has %d bytes of data and size %d, want none and %d", p, s.Path, len(s.Data), s.Size, len(big))
				}
			} else if len(s.Data) == 0 {
				t.Errorf("ReadPlans(%s): %s was not read", p, s.Path)
			}
		}
		if !found {
			t.Errorf("ReadPlans(%s) = %v, want big.yaml among them", p, paths(sources))
		}
	}
	b := openBranch(t, BranchOptions{Repo: work})
	_, err := b.Change(testContext(t, time.Minute), ChangeRequest{File: "plans/big.yaml", Edit: touch("# more"), Author: person})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Change of a plan over the limit: %v, want ErrTooLarge", err)
	}
}
