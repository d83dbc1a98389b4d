package gitops

import (
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"

	"github.com/hal9ai/hal9-migrate/plan"
)

// ReadPlans returns the plan files (.yaml, .yml, .json and .cue) found under
// p in the repository that contains dir, as they were at revision rev: a
// branch, a tag, a commit hash or a prefix of one, HEAD~1, origin/main and
// the like. p is relative to dir, like a path given on the command line, and
// may name a directory or a single file; a p that does not exist at rev
// yields no sources and no error, since plans may be added by the change
// being looked at.
//
// Each Source's Path is p joined with the file's path below it, so that it
// reads the same as a path found by walking the working tree from dir. Files
// found by walking a directory are marked Discovered; as when walking the
// working tree, hidden directories are skipped. A file larger than
// DefaultMaxFileBytes is not read: its Source has no Data and its Size set,
// and the plan Validator refuses it.
func ReadPlans(dir, rev, p string) ([]plan.Source, error) {
	repo, root, err := open(dir)
	if err != nil {
		return nil, err
	}
	treePath, err := inRepo(root, dir, p)
	if err != nil {
		return nil, err
	}
	hash, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return nil, fmt.Errorf("resolve revision %q: %w", rev, err)
	}
	commit, err := repo.CommitObject(*hash)
	if err != nil {
		return nil, fmt.Errorf("read commit %s (%s): %w", hash, rev, err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s (%s): %w", hash, rev, err)
	}

	if treePath != "." {
		parent, entry, err := find(tree, treePath)
		if err != nil {
			return nil, fmt.Errorf("find %s at %s: %w", p, rev, err)
		}
		if entry == nil {
			return nil, nil
		}
		if entry.Mode != filemode.Dir {
			if !isPlanFile(treePath, entry.Mode) {
				return nil, nil
			}
			// Named by the user, not discovered: a file that is not a
			// plan is reported rather than skipped, as in the working tree.
			src, err := planSource(repo.Storer, p, entry.Hash, DefaultMaxFileBytes)
			if err != nil {
				return nil, fmt.Errorf("read %s at %s: %w", p, rev, err)
			}
			return []plan.Source{src}, nil
		}
		if tree, err = parent.Tree(entry.Name); err != nil {
			return nil, fmt.Errorf("read %s at %s: %w", p, rev, err)
		}
	}

	var sources []plan.Source
	err = plansIn(tree, func(name string, h plumbing.Hash) error {
		src, err := planSource(repo.Storer, filepath.Join(p, filepath.FromSlash(name)), h, DefaultMaxFileBytes)
		if err != nil {
			return fmt.Errorf("read %s at %s: %w", path.Join(treePath, name), rev, err)
		}
		src.Discovered = true
		sources = append(sources, src)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sources, nil
}

// open opens the repository containing dir and returns it with the absolute
// path of its working tree, symlinks resolved.
func open(dir string) (*git.Repository, string, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if err != nil {
		return nil, "", fmt.Errorf("open git repository around %s: %w", dir, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, "", fmt.Errorf("open git repository around %s: %w", dir, err)
	}
	root, err := filepath.EvalSymlinks(wt.Filesystem.Root())
	if err != nil {
		return nil, "", fmt.Errorf("open git repository around %s: %w", dir, err)
	}
	return repo, root, nil
}

// inRepo converts p, relative to dir, into a slash-separated path relative
// to the repository root ("." for the root itself).
func inRepo(root, dir, p string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", err
	}
	full := p
	if !filepath.IsAbs(p) {
		full = filepath.Join(abs, p)
	}
	rel, err := filepath.Rel(root, full)
	if err != nil {
		return "", fmt.Errorf("%s is not inside the repository at %s: %w", p, root, err)
	}
	rel = filepath.ToSlash(rel)
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not inside the repository at %s", p, root)
	}
	return path.Clean(rel), nil
}

// find walks down tree along the slash-separated path p and returns the
// entry p names and the tree holding it, or a nil entry when p does not exist
// (a part of it is missing, or is a file rather than a directory).
func find(tree *object.Tree, p string) (*object.Tree, *object.TreeEntry, error) {
	parts := strings.Split(p, "/")
	for i, name := range parts {
		entry, err := tree.FindEntry(name)
		if errors.Is(err, object.ErrEntryNotFound) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if i == len(parts)-1 {
			return tree, entry, nil
		}
		if entry.Mode != filemode.Dir {
			return nil, nil, nil
		}
		if tree, err = tree.Tree(name); err != nil {
			return nil, nil, err
		}
	}
	return nil, nil, nil
}

// isPlanFile reports whether the file name of mode is a regular file with a
// plan extension. Symbolic links and submodules are not followed.
func isPlanFile(name string, mode filemode.FileMode) bool {
	return (mode == filemode.Regular || mode == filemode.Executable) && plan.FormatOf(name) != ""
}

// plansIn calls f with every plan file in tree and below it, outside hidden
// directories, in git's order: its slash-separated path relative to tree
// and its blob. It reads trees only.
func plansIn(tree *object.Tree, f func(name string, h plumbing.Hash) error) error {
	w := object.NewTreeWalker(tree, true, nil)
	defer w.Close()
	for {
		name, e, err := w.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !hidden(name) && isPlanFile(name, e.Mode) {
			if err := f(name, e.Hash); err != nil {
				return err
			}
		}
	}
}

// hidden reports whether a slash-separated file path lies inside a hidden
// directory.
func hidden(name string) bool {
	dirs := strings.Split(name, "/")
	for _, d := range dirs[:len(dirs)-1] {
		if strings.HasPrefix(d, ".") {
			return true
		}
	}
	return false
}

// DefaultMaxFileBytes is the size above which a file of the repository is
// not read (Options.MaxFileBytes): a plan file is reported by its size, for
// the plan Validator to refuse, and reading any other file is an error
// wrapping ErrTooLarge. Plans are a few kilobytes; the limit keeps a file
// committed by mistake, or on purpose, from costing its size in memory.
const DefaultMaxFileBytes = 1 << 20

// planSource reads the plan file p, blob h, unless it is larger than max:
// then its Source has no Data and its Size set.
func planSource(st storer.EncodedObjectStorer, p string, h plumbing.Hash, max int64) (plan.Source, error) {
	data, size, err := readBlob(st, h, max)
	if errors.Is(err, ErrTooLarge) {
		return plan.Source{Path: p, Size: size, Blob: h.String()}, nil
	}
	return plan.Source{Path: p, Data: data, Blob: h.String()}, err
}

// knownSource is the plan file p, blob h, left unread because the caller
// knows its content: its Blob and its Size, read from the object's header.
func knownSource(st storer.EncodedObjectStorer, p string, h plumbing.Hash) (plan.Source, error) {
	size, err := st.EncodedObjectSize(h)
	if err != nil {
		return plan.Source{}, err
	}
	return plan.Source{Path: p, Size: size, Blob: h.String()}, nil
}

// readBlob returns the content of blob h, and its size; an error wrapping
// ErrTooLarge, without reading it, when it is larger than max. The size
// comes from the object's header (or a delta's), so a large blob is never
// inflated.
func readBlob(st storer.EncodedObjectStorer, h plumbing.Hash, max int64) ([]byte, int64, error) {
	size, err := st.EncodedObjectSize(h)
	if err != nil {
		return nil, 0, err
	}
	if size > max {
		return nil, size, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrTooLarge, size, max)
	}
	obj, err := st.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return nil, size, err
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, size, err
	}
	defer r.Close()
	// The header's size is the object's; read no more than it says.
	data, err := io.ReadAll(io.LimitReader(r, size))
	return data, size, err
}
