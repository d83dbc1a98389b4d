package gitops

import (
	"context"
	"path/filepath"
	"testing"
)

// TestSyncKnownLeavesKnownFilesUnread checks that SyncKnown reads only the
// plan files whose blob the caller does not hold, names every file's blob,
// and that a plain Sync of the same head still reads them all.
func TestSyncKnownLeavesKnownFilesUnread(t *testing.T) {
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "plans.git", map[string]string{
		"plans/a.yaml": planYAML("a", "canary", 10),
		"plans/b.yaml": planYAML("b", "canary", 10),
	})
	ctx := context.Background()
	r, err := Open(ctx, Options{URL: dir})
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.SyncKnown(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string]Hash{}
	for _, f := range first.Files {
		if f.Blob == "" || len(f.Data) == 0 {
			t.Fatalf("%s: blob %q, %d bytes", f.Path, f.Blob, len(f.Data))
		}
		blobs[f.Path] = Hash(f.Blob)
	}

	work := clonePerson(t, dir)
	writeFile(t, filepath.Join(work, "plans/b.yaml"), planYAML("b", "canary", 25))
	run(t, work, "commit", "-qam", "b to 25")
	run(t, work, "push", "-q", "origin", "HEAD:main")

	var asked []string
	known := func(path string, blob Hash) bool {
		asked = append(asked, path)
		return blobs[path] == blob
	}
	snap, err := r.SyncKnown(ctx, known)
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 || len(snap.Files) != 2 {
		t.Fatalf("asked about %v, %d files", asked, len(snap.Files))
	}
	for _, f := range snap.Files {
		switch f.Path {
		case "plans/a.yaml":
			if f.Data != nil || f.Size == 0 || Hash(f.Blob) != blobs[f.Path] {
				t.Errorf("unchanged a.yaml: %d bytes, size %d, blob %s", len(f.Data), f.Size, f.Blob)
			}
		case "plans/b.yaml":
			if len(f.Data) == 0 || Hash(f.Blob) == blobs[f.Path] {
				t.Errorf("changed b.yaml: %d bytes, blob %s", len(f.Data), f.Blob)
			}
		}
	}
	// The same head again, without knowing anything: every file read.
	again, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range again.Files {
		if len(f.Data) == 0 {
			t.Errorf("Sync after SyncKnown: %s unread", f.Path)
		}
	}
}
