package gitops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/hal9ai/hal9-migrate/internal/atomicfile"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
)

// This file is the Git side of the commands that change the desired state
// (migrate, rollback, feature): they edit one plan file and commit it, on
// behalf of a person, either in a local clone or straight to a remote
// repository. The daemon then acts on the commit like on any other.

// BranchOptions says which branch of which repository OpenBranch opens.
type BranchOptions struct {
	// Repo is a git URL, the path of a bare repository, or a directory
	// inside a working tree (a local clone); "." when empty.
	Repo string
	// Branch is the branch read and committed on. Empty: the checked-out
	// branch of a local clone, main for a URL. A branch that does not
	// exist is created by the first commit: on the remote from From, in a
	// local clone from HEAD, and then checked out.
	Branch string
	// From is the branch a new Branch starts from on a remote; main when
	// empty. A local clone starts new branches at HEAD and takes no From.
	From string
	// MustExist makes a Branch that does not exist an error, for a command
	// that only reads.
	MustExist bool
	// Path is the plans folder (or a single plan file) relative to the
	// repository root; "plans" when empty, "." for the whole repository.
	Path string
	// Push, for a local clone, pushes the branch to the remote origin after
	// each commit. A commit to a URL is always pushed.
	Push bool
	// Auth holds credentials for a URL, and for pushing a local clone to
	// origin; the zero Auth lets go-git use its defaults there (the SSH
	// agent, no HTTP credentials).
	Auth Auth
	// Now stamps commits; time.Now when nil.
	Now func() time.Time
	// Timeouts bound each call to a remote, as Options.Timeouts does;
	// for a local clone only its push to origin is such a call.
	Timeouts Timeouts
}

// Branch is one branch of a plan repository, local or remote, as it was
// when OpenBranch read it: its plan files, and the commit a change is built
// on.
type Branch struct {
	name   string
	exists bool
	from   string // the branch or commit a new branch starts from
	path   string
	files  []plan.Source
	now    func() time.Time

	local  *localClone // set for a local clone
	remote *Repo       // set for a URL
}

// localClone is a repository with a working tree on this machine.
type localClone struct {
	repo *git.Repository
	root string
	// head is the checked-out branch, "" when HEAD is detached.
	head     plumbing.ReferenceName
	ref      plumbing.ReferenceName
	base     *object.Commit
	push     bool
	auth     Auth
	timeouts Timeouts
}

// ChangeRequest is a change of one plan file.
type ChangeRequest struct {
	// File is the plan file to change, as Branch.Files names it:
	// slash-separated, relative to the repository root.
	File string
	// Edit computes the file's new content from its content on the branch.
	// For a URL it may be called again when someone else pushed first: its
	// result must then describe the same change, or the commit is refused.
	Edit func(data []byte) (Edited, error)
	// Confirm, when set, sees the change before it is committed; an error
	// from it aborts the change, and is returned as it is.
	Confirm func(Edited) error
	Author  Signature
	// Committer, when set, is the commit's committer; without it the
	// author commits.
	Committer Signature
}

// Edited is what ChangeRequest.Edit makes of a file.
type Edited struct {
	// Data is the new content; the same bytes as before mean no change.
	Data []byte
	// Change says what the change does, in a line: "set spec.target to
	// canary 25%".
	Change string
	// Message is the commit message.
	Message string
	// Trailers are appended to the message as git trailers. The commit is
	// a person's: it never carries BotTrailer.
	Trailers map[string]string
}

// ChangeResult says what Change did.
type ChangeResult struct {
	// Commit is the new commit; empty when the change left the file as it
	// was and nothing was committed.
	Commit Hash
	Branch string
	// Created reports that the commit created Branch, from From.
	Created bool
	From    string
	File    string
	Change  string
	// Pushed reports that the commit is on the remote: always for a URL,
	// after BranchOptions.Push for a local clone.
	Pushed bool
}

// OpenBranch opens the branch and reads its plan files. A directory inside
// a working tree is a local clone; a bare repository's path or anything
// else is a URL, opened with Open. A directory in no repository is an
// error wrapping ErrNoRepository.
func OpenBranch(ctx context.Context, o BranchOptions) (*Branch, error) {
	p, err := plansPath(o.Path)
	if err != nil {
		return nil, err
	}
	if strings.TrimPrefix(o.Branch, "refs/heads/") == "HEAD" {
		// git refuses this name: HEAD would become ambiguous.
		return nil, fmt.Errorf("invalid branch name %q: HEAD is not a branch", o.Branch)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	dir := o.Repo
	if dir == "" {
		dir = "."
	}
	b := &Branch{path: p, now: now}
	if err := b.open(ctx, dir, o); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Branch) open(ctx context.Context, dir string, o BranchOptions) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		// A bare repository is found only where it is; a working tree
		// from any directory inside it. A linked worktree (git worktree
		// add) keeps its HEAD and index in its own git directory and the
		// branches and objects in the main repository's.
		repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
		if err != nil {
			repo, err = git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
		}
		if errors.Is(err, git.ErrRepositoryNotExists) {
			err = ErrNoRepository
		}
		if err != nil {
			return fmt.Errorf("open git repository around %s: %w", dir, err)
		}
		wt, err := repo.Worktree()
		switch {
		case errors.Is(err, git.ErrIsBareRepository):
			return b.openRemote(ctx, dir, o)
		case err != nil:
			return fmt.Errorf("open git repository around %s: %w", dir, err)
		}
		return b.openLocal(repo, wt.Filesystem.Root(), o)
	}
	if o.Repo == "" {
		return errors.New("open git repository: the current directory does not exist")
	}
	return b.openRemote(ctx, o.Repo, o)
}

func (b *Branch) openRemote(ctx context.Context, url string, o BranchOptions) error {
	b.name = o.Branch
	if b.name == "" {
		b.name = "main"
	}
	b.from = o.From
	if b.from == "" {
		b.from = "main"
	}
	opts := Options{URL: url, Branch: b.name, Path: b.path, Auth: o.Auth, Now: b.now, Timeouts: o.Timeouts}
	if ref, err := branchRef(b.name); err == nil && ref.Short() != b.from && !o.MustExist {
		opts.CreateFrom = b.from
	}
	r, err := Open(ctx, opts)
	if err != nil {
		return err
	}
	b.name = r.branch.Short()
	snap, err := r.Sync(ctx)
	if err != nil {
		return err
	}
	b.remote, b.files = r, snap.Files
	b.exists = !r.cur.fresh
	return nil
}

func (b *Branch) openLocal(repo *git.Repository, root string, o BranchOptions) error {
	if o.From != "" {
		return fmt.Errorf("the local clone at %s starts new branches at HEAD: a branch to start from is for a repository URL", root)
	}
	timeouts, err := o.Timeouts.withDefaults()
	if err != nil {
		return err
	}
	l := &localClone{repo: repo, root: root, push: o.Push, auth: o.Auth, timeouts: timeouts}
	head, err := repo.Reference(plumbing.HEAD, false)
	if err != nil {
		return fmt.Errorf("read HEAD of %s: %w", root, err)
	}
	if head.Type() == plumbing.SymbolicReference {
		l.head = head.Target()
	}
	if o.Branch == "" {
		if l.head == "" {
			return fmt.Errorf("HEAD of %s is detached: name the branch to commit on", root)
		}
		l.ref = l.head
	} else if l.ref, err = branchRef(o.Branch); err != nil {
		return err
	}
	b.name = l.ref.Short()

	at, err := repo.Reference(l.ref, true)
	switch {
	case err == nil:
		b.exists = true
	case errors.Is(err, plumbing.ErrReferenceNotFound) && o.MustExist:
		return fmt.Errorf("read branch %s of %s: %w: the branch does not exist", b.name, root, ErrNotFound)
	case errors.Is(err, plumbing.ErrReferenceNotFound):
		// A new branch starts at HEAD.
		if at, err = repo.Reference(plumbing.HEAD, true); err != nil {
			return fmt.Errorf("create branch %s in %s: HEAD has no commit yet: %w", b.name, root, err)
		}
		b.from = "HEAD"
		if l.head != "" {
			b.from = l.head.Short()
		}
	default:
		return fmt.Errorf("read branch %s of %s: %w", b.name, root, err)
	}
	if l.base, err = repo.CommitObject(at.Hash()); err != nil {
		return fmt.Errorf("read branch %s of %s: %w", b.name, root, err)
	}
	tree, err := l.base.Tree()
	if err != nil {
		return fmt.Errorf("read tree of %s: %w", l.base.Hash, err)
	}
	if b.files, err = planFiles(l.repo.Storer, tree, b.path, DefaultMaxFileBytes); err != nil {
		return fmt.Errorf("read plans of branch %s at %s: %w", b.name, l.base.Hash, err)
	}
	b.local = l
	return nil
}

// Name is the branch's name.
func (b *Branch) Name() string { return b.name }

// Local reports whether the branch is a local clone's.
func (b *Branch) Local() bool { return b.local != nil }

// Exists reports whether the branch exists; when it does not, the first
// commit creates it from From.
func (b *Branch) Exists() bool { return b.exists }

// From is the branch (or "HEAD") a new branch starts from.
func (b *Branch) From() string { return b.from }

// Remote names where a commit is pushed: the URL, without a password, or
// "origin" for a local clone.
func (b *Branch) Remote() string {
	if b.remote != nil {
		return b.remote.where
	}
	return "origin"
}

// Files returns the plan files under the plans path on the branch (or on
// the branch it starts from), read as Snapshot.Files are. Do not modify
// them.
func (b *Branch) Files() []plan.Source { return b.files }

// Change edits req.File and commits it. A change that leaves the file as
// it is commits nothing and returns a result with no Commit.
//
// In a local clone the commit holds that one file whatever else is staged:
// it is built on the branch head, the branch is moved to it only if it did
// not move meanwhile, and, when the branch is checked out, the file is
// written to the working tree and the index. A file with uncommitted
// changes is refused. With BranchOptions.Push the branch is then pushed to
// origin, never forced; a push that fails leaves the commit in place and
// returns the result with the error.
//
// For a URL the commit is built and pushed by Repo.Commit, without
// BotTrailer; should the push lose a race, the edit is made again on the
// new head, and refused if it no longer describes the same change.
func (b *Branch) Change(ctx context.Context, req ChangeRequest) (ChangeResult, error) {
	res := ChangeResult{Branch: b.name, File: req.File}
	if req.Edit == nil {
		return res, errors.New("change: no edit function")
	}
	if req.Author.Name == "" || req.Author.Email == "" {
		return res, errors.New("change: the author needs a name and an email")
	}
	if b.local != nil {
		return b.changeLocal(ctx, req, res)
	}
	return b.changeRemote(ctx, req, res)
}

// source returns the data of one of the branch's plan files.
func (b *Branch) source(file string) ([]byte, error) {
	for _, s := range b.files {
		if s.Path == file && s.Data == nil && s.Size > 0 {
			return nil, fmt.Errorf("read %s: %w: %d bytes, over the limit of %d", file, ErrTooLarge, s.Size, DefaultMaxFileBytes)
		}
		if s.Path == file {
			return s.Data, nil
		}
	}
	return nil, fmt.Errorf("%s is not a plan file under %s on branch %s", file, b.path, b.name)
}

func (b *Branch) changeRemote(ctx context.Context, req ChangeRequest, res ChangeResult) (ChangeResult, error) {
	// Start from the head as it is now: one listing of refs when it did
	// not move since OpenBranch or the last Change.
	snap, err := b.remote.Sync(ctx)
	if err != nil {
		return res, err
	}
	b.files = snap.Files
	data, err := b.source(req.File)
	if err != nil {
		return res, err
	}
	first, err := req.Edit(data)
	if err != nil {
		return res, err
	}
	res.Change = first.Change
	if bytes.Equal(first.Data, data) {
		return res, nil
	}
	if req.Confirm != nil {
		if err := req.Confirm(first); err != nil {
			return res, err
		}
	}
	var noop, created bool
	h, err := b.remote.Commit(ctx, CommitRequest{
		Message:   first.Message,
		Author:    req.Author,
		Committer: req.Committer,
		Trailers:  first.Trailers,
		ByPerson:  true,
		Changes: func(read func(string) ([]byte, error)) (map[string][]byte, error) {
			data, err := read(req.File)
			if err != nil {
				return nil, err
			}
			e, err := req.Edit(data)
			if err != nil {
				return nil, err
			}
			if e.Change != first.Change || e.Message != first.Message {
				return nil, fmt.Errorf("%s changed on branch %s meanwhile, and the change would now be %q: run the command again", req.File, b.name, e.Change)
			}
			noop = bytes.Equal(e.Data, data)
			// Commit holds the Repo while it builds on r.cur: whether the
			// push creates the branch is known from the head built on.
			created = b.remote.cur.fresh
			return map[string][]byte{req.File: e.Data}, nil
		},
	})
	if err != nil || noop {
		return res, err
	}
	res.Commit, res.Pushed = h, true
	if created {
		res.Created, res.From = true, b.from
	}
	b.exists = true
	return res, nil
}

func (b *Branch) changeLocal(ctx context.Context, req ChangeRequest, res ChangeResult) (ChangeResult, error) {
	l := b.local
	clean, err := cleanPath(req.File)
	if err != nil {
		return res, err
	}
	// The branch is (or, once created, will be) checked out: the file in
	// the working tree and the index must be the committed one, or the
	// commit would silently drop or carry someone's work.
	checkedOut := l.head == l.ref || !b.exists
	tree, err := l.base.Tree()
	if err != nil {
		return res, fmt.Errorf("read tree of %s: %w", l.base.Hash, err)
	}
	data, err := readFile(l.repo.Storer, tree, clean, DefaultMaxFileBytes)
	if err != nil {
		return res, fmt.Errorf("%s on branch %s: %w", clean, b.name, err)
	}
	blob := plumbing.ComputeHash(plumbing.BlobObject, data)
	if checkedOut {
		if err := l.unchanged(clean, blob); err != nil {
			return res, err
		}
	} else if wt, ok := l.checkedOutElsewhere(); ok {
		return res, fmt.Errorf("branch %s is checked out in the worktree at %s: commit there, or the commit would leave that worktree's index undoing it", b.name, wt)
	}
	e, err := req.Edit(data)
	if err != nil {
		return res, err
	}
	res.Change = e.Change
	if bytes.Equal(e.Data, data) {
		return res, nil
	}
	if req.Confirm != nil {
		if err := req.Confirm(e); err != nil {
			return res, err
		}
		// The file may have been edited while the person was asked.
		if checkedOut {
			if err := l.unchanged(clean, blob); err != nil {
				return res, err
			}
		}
	}
	msg, err := formatMessage(e.Message, e.Trailers, false)
	if err != nil {
		return res, fmt.Errorf("commit to %s: %w", b.name, err)
	}

	st := l.repo.Storer
	treeHash, err := writeTree(st, tree, map[string][]byte{clean: e.Data})
	if err != nil {
		return res, fmt.Errorf("commit to %s: %w", b.name, err)
	}
	h, err := storeCommit(st, req.Author, req.Committer, b.now(), msg, treeHash, l.base.Hash, nil)
	if err != nil {
		return res, fmt.Errorf("commit to %s: %w", b.name, err)
	}
	if err := l.advance(b, h); err != nil {
		return res, err
	}
	res.Commit = Hash(h.String())
	if !b.exists {
		res.Created, res.From = true, b.from
	}
	b.exists = true
	if l.base, err = l.repo.CommitObject(h); err != nil {
		return res, fmt.Errorf("read commit %s: %w", h, err)
	}
	if tree, err = l.base.Tree(); err == nil {
		b.files, err = planFiles(l.repo.Storer, tree, b.path, DefaultMaxFileBytes)
	}
	if err != nil {
		return res, fmt.Errorf("read plans of branch %s at %s: %w", b.name, h, err)
	}
	if checkedOut {
		if err := l.checkOut(clean, e.Data); err != nil {
			return res, fmt.Errorf("committed %s on %s, but updating the working tree failed: %w", h, b.name, err)
		}
	}
	if l.push {
		if err := l.pushOrigin(ctx); err != nil {
			return res, fmt.Errorf("committed %s on %s, but %w", shorthash.Of(h.String()), b.name, err)
		}
		res.Pushed = true
	}
	return res, nil
}

// unchanged checks that file is in the index and the working tree as it is
// in the commit (blob want).
func (l *localClone) unchanged(file string, want plumbing.Hash) error {
	dirty := fmt.Errorf("%s has uncommitted changes: commit or stash them first, so that the commit holds only this change", file)
	idx, err := l.repo.Storer.Index()
	if err != nil {
		return fmt.Errorf("read the index of %s: %w", l.root, err)
	}
	entry, err := idx.Entry(file)
	if err != nil || entry.Hash != want {
		return dirty
	}
	data, err := os.ReadFile(filepath.Join(l.root, filepath.FromSlash(file)))
	if err != nil || plumbing.ComputeHash(plumbing.BlobObject, data) != want {
		return dirty
	}
	return nil
}

// checkedOutElsewhere returns the root of another working tree of the
// repository (the main one, or one made by git worktree add) that has the
// branch checked out. Moving the branch under that worktree would leave
// its index and files as they were, so that they would read as changes
// undoing the commit, ready to be committed by accident; git refuses to
// move such a branch for the same reason.
func (l *localClone) checkedOutElsewhere() (string, bool) {
	st, ok := l.repo.Storer.(*filesystem.Storage)
	if !ok {
		return "", false
	}
	own := st.Filesystem().Root()
	common := own
	if data, err := os.ReadFile(filepath.Join(own, "commondir")); err == nil {
		common = strings.TrimSpace(string(data))
		if !filepath.IsAbs(common) {
			common = filepath.Join(own, common)
		}
	}
	type worktree struct{ gitDir, root string }
	var all []worktree
	if cfg, err := l.repo.Config(); err == nil && !cfg.Core.IsBare {
		all = append(all, worktree{common, filepath.Dir(common)})
	}
	linked, _ := os.ReadDir(filepath.Join(common, "worktrees"))
	for _, e := range linked {
		w := worktree{filepath.Join(common, "worktrees", e.Name()), e.Name()}
		// gitdir names the .git file at the worktree's root.
		if data, err := os.ReadFile(filepath.Join(w.gitDir, "gitdir")); err == nil {
			w.root = filepath.Dir(strings.TrimSpace(string(data)))
		}
		all = append(all, w)
	}
	ownInfo, err := os.Stat(own)
	if err != nil {
		return "", false
	}
	for _, w := range all {
		if fi, err := os.Stat(w.gitDir); err != nil || os.SameFile(fi, ownInfo) {
			continue
		}
		head, err := os.ReadFile(filepath.Join(w.gitDir, "HEAD"))
		if err == nil && strings.TrimSpace(string(head)) == "ref: "+l.ref.String() {
			return w.root, true
		}
	}
	return "", false
}

// advance moves the branch to commit h, provided it is still where the
// change was built (or still absent, for a new branch), and checks out a
// new branch.
func (l *localClone) advance(b *Branch, h plumbing.Hash) error {
	st := l.repo.Storer
	next := plumbing.NewHashReference(l.ref, h)
	if b.exists {
		err := st.CheckAndSetReference(next, plumbing.NewHashReference(l.ref, l.base.Hash))
		if err != nil {
			return fmt.Errorf("move branch %s to %s: %w (did it move meanwhile?)", b.name, h, err)
		}
		return nil
	}
	if _, err := st.Reference(l.ref); err == nil {
		return fmt.Errorf("create branch %s: it was created meanwhile", b.name)
	}
	head, err := l.repo.Reference(plumbing.HEAD, true)
	if err != nil || head.Hash() != l.base.Hash {
		return fmt.Errorf("create branch %s: HEAD moved meanwhile", b.name)
	}
	if err := st.SetReference(next); err != nil {
		return fmt.Errorf("create branch %s: %w", b.name, err)
	}
	// The new branch is at HEAD's commit plus this change: checking it
	// out only moves HEAD; the working tree and index are updated below.
	if err := st.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, l.ref)); err != nil {
		return fmt.Errorf("check out branch %s: %w", b.name, err)
	}
	l.head = l.ref
	return nil
}

// checkOut writes the committed content of file to the working tree and
// the index. The file was clean, so nothing is lost.
func (l *localClone) checkOut(file string, data []byte) error {
	full := filepath.Join(l.root, filepath.FromSlash(file))
	fi, err := os.Stat(full)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(full, data, fi.Mode().Perm()); err != nil {
		return err
	}
	wt, err := l.repo.Worktree()
	if err != nil {
		return err
	}
	return wt.AddWithOptions(&git.AddOptions{Path: filepath.FromSlash(file), SkipStatus: true})
}

// pushOrigin pushes the branch to the same branch of origin, never forced.
func (l *localClone) pushOrigin(ctx context.Context) error {
	remote, err := l.repo.Remote("origin")
	if err != nil {
		return fmt.Errorf("push: the clone has no remote origin: %w", err)
	}
	url := remote.Config().URLs[0]
	where := Redact(url)
	ep, err := parseEndpoint(url)
	if err != nil {
		return fmt.Errorf("push to origin: %w", err)
	}
	creds := &credentials{}
	for _, s := range urlSecrets(url) {
		creds.remember(s)
	}
	if l.auth != (Auth{}) {
		if creds, err = newCredentials(url, ep, l.auth); err != nil {
			return fmt.Errorf("push to origin %s: %w", where, err)
		}
	}
	auth, err := creds.auth()
	if err != nil {
		return fmt.Errorf("push to origin %s: %w", where, err)
	}
	spec := config.RefSpec(l.ref.String() + ":" + l.ref.String())
	err = call(ctx, l.timeouts.Push, ep.Protocol == "ssh", func(ctx context.Context, proxy transport.ProxyOptions) error {
		return remote.PushContext(ctx, &git.PushOptions{
			RemoteName:   "origin",
			RefSpecs:     []config.RefSpec{spec},
			Auth:         auth,
			ProxyOptions: proxy,
		})
	})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("push to origin %s: %w", where, ctx.Err())
	}
	var ke *kindError
	if !errors.As(classify(err), &ke) {
		ke = &kindError{msg: err.Error()}
	}
	err = &kindError{kind: ke.kind, msg: creds.scrub(ke.msg)}
	if errors.Is(err, ErrNonFastForward) {
		return fmt.Errorf("push to origin %s failed: %w (origin has commits this clone lacks: pull, then push)", where, err)
	}
	return fmt.Errorf("push to origin %s failed: %w", where, err)
}
