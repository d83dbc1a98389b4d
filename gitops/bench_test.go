package gitops

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkHeadUnchanged is the daemon's poll when nothing moved, over git
// daemon on loopback: Head alone, and Sync (Head plus the comparison with
// the previous snapshot).
func BenchmarkHeadUnchanged(b *testing.B) {
	needGit(b)
	base := b.TempDir()
	bare(b, base, "r.git", initialFiles)
	url := gitDaemon(b, base) + "r.git"
	ctx := testContext(b, 5*time.Minute)
	r, err := Open(ctx, Options{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("Head", func(b *testing.B) {
		for b.Loop() {
			if _, err := r.Head(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Sync", func(b *testing.B) {
		for b.Loop() {
			s, err := r.Sync(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if s.Changed {
				b.Fatal("the head moved")
			}
		}
	})
}

// BenchmarkCommitStatus5000 pushes a status commit to a repository of 5,000
// commits over git daemon on loopback: Repo.Commit from its depth-1 clone,
// and, in the same run, the git CLI doing `git commit && git push` from a
// full clone, for comparison.
func BenchmarkCommitStatus5000(b *testing.B) {
	needGit(b)
	base := b.TempDir()
	dir := bare(b, base, "r.git", nil)
	fastImport(b, dir, 5000)
	url := gitDaemon(b, base) + "r.git"
	ctx := testContext(b, 10*time.Minute)

	b.Run("gitops", func(b *testing.B) {
		r, err := Open(ctx, Options{URL: url})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			i++
			if _, err := r.Commit(ctx, CommitRequest{
				Message: fmt.Sprint("status ", i), Author: daemon,
				Changes: writeStatus(fmt.Sprintf("gitops round %d\n", i)),
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("git-cli", func(b *testing.B) {
		work := clonePerson(b, url)
		i := 0
		for b.Loop() {
			i++
			writeFile(b, filepath.Join(work, "status/hal9.yaml"), fmt.Sprintf("cli round %d\n", i))
			run(b, work, "add", "status/hal9.yaml")
			run(b, work, "commit", "-q", "-m", fmt.Sprint("status ", i))
			run(b, work, "push", "-q", "origin", "HEAD:main")
		}
	})
}
