package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
)

// Hash is a commit id, 40 hexadecimal digits. The zero value means none.
type Hash string

func (h Hash) String() string { return string(h) }

// Signature names a commit's author.
type Signature struct {
	Name  string
	Email string
}

// Snapshot is the tracked branch's head as Sync last saw it.
type Snapshot struct {
	Commit  Hash
	Author  Signature
	Message string
	// Time is the head's committer time: when it was made on the branch.
	Time time.Time
	// Files are the plan files (.yaml, .yml, .json, .cue) under the plans
	// path, read as ReadPlans reads them: Path relative to the repository
	// root with forward slashes, Discovered set, hidden directories
	// skipped, each with its Blob (SyncKnown leaves the Data of some
	// out). They are shared with later snapshots of the same commit: do
	// not modify them.
	Files []plan.Source
	// Changed reports that the head moved since the previous Sync (always
	// true on the first).
	Changed bool
	// Own reports that every commit since the previous snapshot is one of
	// the daemon's own (carries the trailer "Hal9-Migrate-Bot: true"), so
	// the new head asks for no work. It is false on the first Sync, when
	// there is no previous snapshot to compare with, and false when a
	// person's commit hides below the daemon's: Commit rebases onto heads
	// that Sync has not returned yet, and a status commit on top of a
	// person's change must not hide that change.
	Own bool
	// Person is the newest commit at or below Commit that this Repo did
	// not push: Commit itself, unless this Repo's own commits landed on
	// top of other commits since the previous snapshot (its status commit
	// rebased onto a person's push before Sync saw it), in which case it
	// is the commit below them, where a change to the plan files since the
	// previous snapshot was made.
	Person Hash
	// Signed reports that every commit that reached the branch since the
	// previous snapshot (on the first Sync, the head) carries a good
	// OpenPGP signature by a key of Options.TrustedKeys, and Signer names
	// the newest one's key (key id and user id). Commits this Repo pushed
	// itself are passed over; when they are all there is, the previous
	// snapshot's verdict stands. Without trusted keys Signed is always
	// false. Otherwise SignatureProblem says why not: "unsigned", "signed
	// by unknown key ID" or "bad signature" for the head, the same after
	// "commit 1a2b3c4 below it: " for a commit under the head, or that the
	// commits since the previous snapshot could not be read. An unsigned
	// commit is not an error: what to do about it is the caller's choice.
	Signed           bool
	Signer           string
	SignatureProblem string
}

// CommitRequest is one change to commit and push.
type CommitRequest struct {
	// Message is the commit message; the trailers are appended to it.
	Message string
	Author  Signature
	// Committer, when set, is the commit's committer; without it the
	// author commits.
	Committer Signature
	// Trailers are appended to the message as git trailers, sorted by key
	// ("Hal9-Migrate-Plan: hal9", "Hal9-Migrate-Action: rollback"). Commit
	// always adds BotTrailer.
	Trailers map[string]string
	// ByPerson marks a change a person asked for, through a command, rather
	// than one of the daemon's own: Commit leaves BotTrailer out, so that
	// the daemon acts on the commit.
	ByPerson bool
	// Changes computes the change from the current tree: read returns a
	// file's content (an error wrapping fs.ErrNotExist when it is absent),
	// paths are slash-separated and relative to the repository root. The
	// result maps paths to their new content; a nil value deletes the
	// file. Changes is called again on the new tree each time the push
	// loses a race, so it must depend only on what it reads.
	Changes func(read func(path string) ([]byte, error)) (map[string][]byte, error)
}

// BotTrailer is the trailer key Commit adds, with the value "true", to
// every commit it makes; Snapshot.Own recognises the daemon's commits by it.
const BotTrailer = "Hal9-Migrate-Bot"

// Trailer keys of the commits the daemon and the commands make, saying
// which plan a commit is about, what it did and between which positions;
// the daemon, `status` and `plan log` read them back.
const (
	TrailerPlan   = "Hal9-Migrate-Plan"
	TrailerAction = "Hal9-Migrate-Action"
	// TrailerGroup names the lockstep group a commit moves as one.
	TrailerGroup = "Hal9-Migrate-Group"
	TrailerFrom  = "Hal9-Migrate-From"
	TrailerTo    = "Hal9-Migrate-To"
)

// Reader is what the poll needs: the cheap head check and the sync.
type Reader interface {
	Head(ctx context.Context) (Hash, error)
	Sync(ctx context.Context) (Snapshot, error)
}

// Writer commits status files and rollbacks.
type Writer interface {
	Commit(ctx context.Context, req CommitRequest) (Hash, error)
}

var (
	_ Reader = (*Repo)(nil)
	_ Writer = (*Repo)(nil)
)

// Options configures Open.
type Options struct {
	// URL is the repository: ssh://, scp-like git@host:path, https://,
	// http://, git://, file:// or a local path.
	URL string
	// Branch is the tracked branch; "main" when empty.
	Branch string
	// CreateFrom, when set, names the branch that Branch is created from
	// if it does not exist on the remote: until the first Commit creates
	// it, Head and Sync read CreateFrom's head, and Commit pushes a new
	// branch (which fails, and is retried on the new head, if someone
	// else creates it first). Empty: a missing Branch is an error.
	CreateFrom string
	// Path is the plans folder (or a single plan file) relative to the
	// repository root; "plans" when empty, "." for the whole repository.
	Path string
	Auth Auth
	// CAFile is a PEM bundle of extra certificate authorities trusted for
	// https, on top of the system's.
	CAFile string
	// Now stamps commits; time.Now when nil.
	Now func() time.Time
	// TrustedKeys is an armored OpenPGP key ring (read by the caller from
	// a file). When set, Sync checks against it every commit that reached
	// the branch since the previous snapshot, following first parents
	// (a merge commit vouches for the branch it merges), and reports the
	// verdict in Snapshot.Signed. Commits this Repo pushed itself are not
	// checked. The first Sync checks the head alone.
	TrustedKeys string
	// SigningKey is an armored OpenPGP private key (read by the caller
	// from a file) that signs every commit Commit makes: the daemon's own
	// promotions then pass a signature gate, its own and other daemons'.
	// With TrustedKeys, Open refuses a key that is not among them.
	SigningKey string
	// Timeouts bound each call to the remote (list refs, fetch, push),
	// also against a remote that accepts the connection and never
	// answers; the caller's context may end a call sooner. The zero value
	// means the defaults: 10s, 60s and 30s.
	Timeouts Timeouts
	// MaxFileBytes is the size above which a file of the repository is
	// not read: a plan file that large is in Snapshot.Files with its Size
	// and no Data (the plan Validator refuses it), and ReadFile, or the
	// read of CommitRequest.Changes, of a file that large fails with
	// ErrTooLarge. DefaultMaxFileBytes (1 MiB) when zero.
	MaxFileBytes int64
	// TempDir is the directory a fetched pack is written to, in a file
	// that is removed as soon as it is made (it lives as long as the
	// clone that reads it). os.TempDir() when empty; and when no file can
	// be made there (a FROM scratch image has no /tmp), the pack is kept
	// in memory instead: still compressed, and never inflated whole, but
	// costing its size in memory. Set it to a directory of the daemon's
	// own (its data directory) so that memory does not follow the
	// repository.
	TempDir string
	// MaxPackBytes is the largest pack one fetch may write;
	// DefaultMaxPackBytes (1 GiB) when zero. A larger one fails the fetch.
	MaxPackBytes int64
}

// DefaultMaxPackBytes is the default Options.MaxPackBytes.
const DefaultMaxPackBytes = 1 << 30

// Retry bounds for Commit: at most commitTries pushes, waiting a jittered
// exponential backoff from commitBackoff between pushes that lost a race.
const (
	commitTries   = 6
	commitBackoff = 50 * time.Millisecond
)

// Repo tracks one branch of one remote repository. It is safe for
// concurrent use; Sync and Commit run one at a time.
//
// Repo keeps a depth-1 clone that holds exactly one commit, the branch head
// as last fetched or pushed, and its tree: every fetch starts a fresh
// storage, and every successful push copies the pushed commit and its tree
// into a fresh one. The commit and its trees live in memory (go-git's
// memory storage), the files (blobs) in the pack the fetch brought, on
// disk, compressed, inflated only when read (see packStore). The choice,
// and its limits:
//   - depth 1, because go-git's push walks the history it has (measured on
//     a 5,000-commit repository: ~0.27 s per push from a full in-memory
//     clone, ~20 ms from a depth-1 one) and a full in-memory clone of a
//     long-lived repository costs 100-250 MB (a 20,000-commit one);
//   - memory and one pack file rather than a repository on disk (go-git's
//     filesystem storage), because there is nothing to lock, clean up,
//     share between replicas or find corrupt after a crash: the pack file
//     is removed as soon as it is made and lives as long as the clone, and
//     a restart costs one shallow fetch. Files stay out of memory because
//     go-git's memory storage holds every object inflated, and its pack
//     parser (the filesystem storage's too) inflates every object whole at
//     least once: a 150 MB file next to the plans peaked at 580 MB, and
//     now costs 150 MB of disk. What the clone holds in memory grows with
//     the repository's trees (tens of bytes per file), not its files. A
//     large file still travels with every fetch: keep plans in a
//     repository, or at least a branch, of their own;
//   - one commit rather than incremental shallow fetches and pushes into
//     the same storage, because memory storage never drops objects (a
//     daemon committing status for months would grow without bound) and
//     because go-git's push walks every commit it holds from the remote's
//     head down (the daemon's own commits since the last fetch would make
//     each push slower than the one before). The price is fetching the
//     whole (small) tree each time someone else moves the head.
type Repo struct {
	url      string // as given to go-git
	where    string // the URL as errors show it, without a password
	branch   plumbing.ReferenceName
	from     plumbing.ReferenceName // Options.CreateFrom, or ""
	path     string                 // slash-separated, relative to the root, "." for all
	creds    *credentials
	caBundle []byte
	now      func() time.Time
	lister   *git.Remote
	trusted  string // Options.TrustedKeys
	signKey  *openpgp.Entity
	timeouts Timeouts
	ssh      bool  // the URL is an ssh one: calls dial through callDialer
	spool    spool // where fetches write their pack
	maxFile  int64 // Options.MaxFileBytes

	tries   int
	backoff time.Duration
	// onRetry, when set (by tests), sees the raw error of every push that
	// lost a race, before classification.
	onRetry func(attempt int, raw error)

	mu   sync.Mutex
	cur  *clone    // the head last fetched or pushed
	snap *Snapshot // the snapshot Sync last returned
	// partial reports that snap's files leave out what a SyncKnown's
	// caller knew.
	partial bool
	// own maps the commits this Repo pushed since the last snapshot to
	// their parents, so that Sync can see through a chain of them.
	own map[plumbing.Hash]plumbing.Hash
	// since stands in for the previous snapshot's commit in the first
	// Sync's signature checks (CheckSignaturesSince).
	since plumbing.Hash
}

// signature is the outcome of a signature check.
type signature struct{ signer, problem string }

// clone is a depth-1 in-memory clone of the branch at head.
type clone struct {
	repo *git.Repository
	head *object.Commit
	tree *object.Tree
	// fresh reports that the branch does not exist on the remote yet:
	// head is the head of the branch it is to be created from.
	fresh bool
}

// Open checks the options, reads the credentials and lists the remote's
// refs once, so that a wrong URL, wrong credentials or a missing branch are
// reported at start rather than at the first poll. It fetches nothing.
func Open(ctx context.Context, o Options) (*Repo, error) {
	if o.URL == "" {
		return nil, errors.New("open git repository: no URL")
	}
	useInProcessFileTransport()
	raw := o.URL
	ep, err := parseEndpoint(raw)
	if err != nil {
		return nil, fmt.Errorf("open git repository: %w", err)
	}
	if ep.Protocol == "file" && !strings.HasPrefix(raw, "file://") {
		// A local path, made absolute and given to go-git as a file://
		// URL: for a bare path go-git's push walks the whole history of
		// the target repository to find what to send (0.7 s per push on
		// 5,000 commits), for a URL only the depth-1 clone's.
		raw = (&url.URL{Scheme: "file", Path: ep.Path}).String()
	}
	where := Redact(raw)
	switch ep.Protocol {
	case "ssh", "https", "http", "git", "file":
	default:
		return nil, fmt.Errorf("open git repository %s: unsupported scheme %q", where, ep.Protocol)
	}
	creds, err := newCredentials(raw, ep, o.Auth)
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", where, err)
	}

	branch := o.Branch
	if branch == "" {
		branch = "main"
	}
	ref, err := branchRef(branch)
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", where, err)
	}
	var from plumbing.ReferenceName
	if o.CreateFrom != "" {
		if from, err = branchRef(o.CreateFrom); err != nil {
			return nil, fmt.Errorf("open git repository %s: %w", where, err)
		}
	}
	p, err := plansPath(o.Path)
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", where, err)
	}

	if o.TrustedKeys != "" {
		if err := readKeyRing(o.TrustedKeys); err != nil {
			return nil, fmt.Errorf("open git repository %s: %w", where, err)
		}
	}
	var signKey *openpgp.Entity
	if o.SigningKey != "" {
		if signKey, err = readSigningKey(o.SigningKey, o.TrustedKeys); err != nil {
			return nil, fmt.Errorf("open git repository %s: %w", where, err)
		}
	}
	var ca []byte
	if o.CAFile != "" {
		if ca, err = os.ReadFile(o.CAFile); err != nil {
			return nil, fmt.Errorf("open git repository %s: read CA file: %w", where, err)
		}
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	timeouts, err := o.Timeouts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", where, err)
	}
	sp := spool{dir: o.TempDir, inMemory: o.TempDir == "", max: o.MaxPackBytes}
	if sp.max == 0 {
		sp.max = DefaultMaxPackBytes
	}
	maxFile := o.MaxFileBytes
	if maxFile == 0 {
		maxFile = DefaultMaxFileBytes
	}
	if sp.max < 0 || maxFile < 0 {
		return nil, fmt.Errorf("open git repository %s: a negative MaxPackBytes or MaxFileBytes", where)
	}

	r := &Repo{
		url:      raw,
		where:    where,
		branch:   ref,
		from:     from,
		path:     p,
		creds:    creds,
		caBundle: ca,
		now:      now,
		trusted:  o.TrustedKeys,
		signKey:  signKey,
		timeouts: timeouts,
		ssh:      ep.Protocol == "ssh",
		spool:    sp,
		maxFile:  maxFile,
		lister: git.NewRemote(memory.NewStorage(), &config.RemoteConfig{
			Name: "origin",
			URLs: []string{raw},
		}),
		tries:   commitTries,
		backoff: commitBackoff,
		own:     map[plumbing.Hash]plumbing.Hash{},
	}
	if _, err := r.Head(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// branchRef checks a branch name ("main", "refs/heads/main") and returns
// its reference name.
func branchRef(name string) (plumbing.ReferenceName, error) {
	short := strings.TrimPrefix(name, "refs/heads/")
	ref := plumbing.NewBranchReferenceName(short)
	if err := ref.Validate(); err != nil || short == "" || strings.ContainsAny(short, "*:") {
		return "", fmt.Errorf("invalid branch name %q", name)
	}
	return ref, nil
}

// plansPath checks the plans path of Options and returns it cleaned and
// slash-separated: "plans" when empty, "." for the whole repository.
func plansPath(p string) (string, error) {
	clean := p
	if clean == "" {
		clean = "plans"
	}
	clean = path.Clean(filepath.ToSlash(clean))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("plans path %q is not inside the repository", p)
	}
	return clean, nil
}

// String names the repository and branch, without secrets.
func (r *Repo) String() string { return r.where + " branch " + r.branch.Short() }

// fail turns an error from go-git into this package's: classified, with
// secrets scrubbed, naming the operation and the repository. A cancelled
// or expired ctx is reported as such, whatever go-git made of it.
func (r *Repo) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w", op, r.where, ctx.Err())
	}
	var ke *kindError
	if !errors.As(classify(err), &ke) {
		ke = &kindError{msg: err.Error()}
	}
	return fmt.Errorf("%s %s: %w", op, r.where, &kindError{kind: ke.kind, msg: r.creds.scrub(ke.msg)})
}

func (r *Repo) notFound(op string) error {
	if r.from != "" {
		return fmt.Errorf("%s %s: %w: neither branch %s nor %s, to create it from, exists", op, r.where, ErrNotFound, r.branch.Short(), r.from.Short())
	}
	return fmt.Errorf("%s %s: %w: branch %s does not exist", op, r.where, ErrNotFound, r.branch.Short())
}

// Head lists the remote's refs, and nothing else, and returns the tracked
// branch's head (or, while the branch does not exist and Options.CreateFrom
// is set, that branch's head). It is the poll's cheap check: one round
// trip, no objects.
func (r *Repo) Head(ctx context.Context) (Hash, error) {
	auth, err := r.creds.auth()
	if err != nil {
		return "", fmt.Errorf("list refs of %s: %w", r.where, err)
	}
	var refs []*plumbing.Reference
	err = call(ctx, r.timeouts.List, r.ssh, func(ctx context.Context, proxy transport.ProxyOptions) error {
		var err error
		refs, err = r.lister.ListContext(ctx, &git.ListOptions{
			Auth:          auth,
			CABundle:      r.caBundle,
			PeelingOption: git.IgnorePeeled,
			ProxyOptions:  proxy,
		})
		return err
	})
	if err != nil {
		return "", r.fail(ctx, "list refs of", err)
	}
	var from Hash
	for _, ref := range refs {
		if ref.Type() != plumbing.HashReference {
			continue
		}
		switch ref.Name() {
		case r.branch:
			return Hash(ref.Hash().String()), nil
		case r.from:
			from = Hash(ref.Hash().String())
		}
	}
	if from != "" {
		return from, nil
	}
	return "", r.notFound("list refs of")
}

// Sync returns the branch head's snapshot. When the head did not move since
// the previous Sync it returns the previous snapshot with Changed false,
// having only listed the remote's refs; otherwise it fetches the head (depth
// 1) unless Commit already has it.
func (r *Repo) Sync(ctx context.Context) (Snapshot, error) {
	return r.SyncKnown(ctx, nil)
}

// Known reports that the caller holds the content of the plan file at
// path, blob blob, already: a daemon that read it at an earlier head.
type Known func(path string, blob Hash) bool

// SyncKnown is Sync, leaving unread the plan files known reports: those
// have their Blob and Size and no Data. Every file has its Blob. A tree of
// 10,000 plans where one changed then reads one file, not 10,000, and the
// snapshot holds the bytes of that one.
func (r *Repo) SyncKnown(ctx context.Context, known Known) (Snapshot, error) {
	head, err := r.Head(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snap != nil && r.snap.Commit == head {
		s := *r.snap
		s.Changed = false
		if (known != nil || r.partial) && r.cur != nil && r.cur.head.Hash.String() == string(head) {
			// The files as this caller knows them: the snapshot kept
			// may have left out what another call knew.
			if s.Files, err = planFilesKnown(r.cur.repo.Storer, r.cur.tree, r.path, r.maxFile, known); err != nil {
				return Snapshot{}, fmt.Errorf("read plans at %s: %w", head, err)
			}
		}
		return s, nil
	}
	if r.cur == nil || r.cur.head.Hash.String() != string(head) {
		c, err := r.fetch(ctx)
		if err != nil {
			return Snapshot{}, err
		}
		r.replace(c)
	}
	s, err := r.snapshot(r.cur, known)
	if err != nil {
		return Snapshot{}, err
	}
	r.partial = known != nil
	if r.trusted != "" {
		sig := r.signaturesSince(ctx, r.cur.head)
		s.Signer, s.SignatureProblem, s.Signed = sig.signer, sig.problem, sig.problem == ""
	}
	r.snap = &s
	clear(r.own) // every commit pushed so far is at or below the new head
	return s, nil
}

// ReadFile returns the content of the slash-separated path, relative to the
// repository root, at the head the last Sync or Commit saw; an error
// wrapping fs.ErrNotExist when it is absent there.
func (r *Repo) ReadFile(path string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return nil, fmt.Errorf("read %s: %w (nothing synced yet)", path, fs.ErrNotExist)
	}
	return readFile(r.cur.repo.Storer, r.cur.tree, path, r.maxFile)
}

// CheckSignaturesSince makes the first Sync check the signatures of every
// commit above commit, as if a previous Sync had returned it, rather than
// the head's alone: a restarted process passes the last commit it acted
// on, so that a push it did not see while it was down is judged whole. A
// commit that is not below the head then makes the first snapshot
// unsigned. It has no effect after the first Sync.
func (r *Repo) CheckSignaturesSince(commit Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.since = plumbing.NewHash(string(commit))
}

// historyDepths are the depths signaturesSince fetches, in turn, until the
// previous snapshot's commit is among them: most pushes bring a few
// commits, a daemon that was stopped for a while sees more.
var historyDepths = []int{16, 256, 4096}

// signaturesSince checks the signature of every commit from head down to
// the previous snapshot's commit, along first parents, skipping this
// Repo's own. It reads what the current clone holds and fetches deeper
// history only when a commit below it is needed.
func (r *Repo) signaturesSince(ctx context.Context, head *object.Commit) signature {
	var prev plumbing.Hash
	var carried signature
	switch {
	case r.snap != nil:
		prev = plumbing.NewHash(string(r.snap.Commit))
		carried = signature{r.snap.Signer, r.snap.SignatureProblem}
	case !r.since.IsZero() && r.since != head.Hash:
		prev = r.since
	default:
		var sig signature
		sig.signer, sig.problem = verify(head, r.trusted)
		return sig
	}
	read := func(h plumbing.Hash) (*object.Commit, error) {
		if h == head.Hash {
			return head, nil
		}
		return nil, plumbing.ErrObjectNotFound
	}
	for _, depth := range append([]int{0}, historyDepths...) {
		if depth > 0 {
			repo, _, err := r.fetchInto(ctx, r.branch, depth)
			if err != nil {
				return signature{problem: fmt.Sprintf("cannot read the commits since %s: %v", shorthash.Of(prev.String()), err)}
			}
			defer release(repo)
			read = repo.CommitObject
		}
		if sig, ok := r.walkSignatures(read, head.Hash, prev, carried); ok {
			return sig
		}
	}
	return signature{problem: fmt.Sprintf("the previous head %s is not among the branch's last %d commits, so the commits since cannot be checked",
		shorthash.Of(prev.String()), historyDepths[len(historyDepths)-1])}
}

// walkSignatures follows first parents from head to prev. It returns false
// when it needs a commit read cannot give (the history fetched is too
// shallow).
func (r *Repo) walkSignatures(read func(plumbing.Hash) (*object.Commit, error), head, prev plumbing.Hash, carried signature) (signature, bool) {
	var newest *signature
	for at := head; at != prev; {
		if parent, ok := r.own[at]; ok {
			at = parent
			continue
		}
		c, err := read(at)
		if err != nil {
			return signature{}, false
		}
		signer, problem := verify(c, r.trusted)
		if problem != "" {
			if at != head {
				problem = fmt.Sprintf("commit %s below it: %s", shorthash.Of(at.String()), problem)
			}
			return signature{problem: problem}, true
		}
		if newest == nil {
			newest = &signature{signer: signer}
		}
		if len(c.ParentHashes) == 0 {
			return signature{problem: fmt.Sprintf("the previous head %s is not in the branch's history (was it rewritten?), so the commits since cannot be checked", shorthash.Of(prev.String()))}, true
		}
		at = c.ParentHashes[0]
	}
	if newest == nil {
		return carried, true
	}
	return *newest, true
}

// fetch makes a fresh depth-1 in-memory clone of the branch head, or of
// the head of the branch it is to be created from.
func (r *Repo) fetch(ctx context.Context) (*clone, error) {
	c, err := r.fetchRef(ctx, r.branch)
	if errors.Is(err, ErrNotFound) && r.from != "" {
		if c, err = r.fetchRef(ctx, r.from); c != nil {
			c.fresh = true
		}
	}
	return c, err
}

// fetchRef makes a fresh depth-1 in-memory clone of the remote's branch
// src, kept as the tracked branch.
func (r *Repo) fetchRef(ctx context.Context, src plumbing.ReferenceName) (*clone, error) {
	repo, head, err := r.fetchInto(ctx, src, 1)
	if err != nil {
		return nil, err
	}
	return newClone(repo, head)
}

// fetchInto fetches the remote's branch src, depth commits deep, into a
// fresh in-memory repository where it is the tracked branch, and returns
// its head.
func (r *Repo) fetchInto(ctx context.Context, src plumbing.ReferenceName, depth int) (*git.Repository, plumbing.Hash, error) {
	const op = "fetch"
	var none plumbing.Hash
	auth, err := r.creds.auth()
	if err != nil {
		return nil, none, fmt.Errorf("%s %s: %w", op, r.where, err)
	}
	repo, err := git.Init(newPackStore(r.spool), nil)
	if err != nil {
		return nil, none, fmt.Errorf("%s %s: %w", op, r.where, err)
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{r.url}})
	if err != nil {
		return nil, none, fmt.Errorf("%s %s: %w", op, r.where, err)
	}
	tracking := plumbing.NewRemoteReferenceName("origin", r.branch.Short())
	if inProcessFile.Load() && strings.HasPrefix(r.url, "file://") {
		depth = 0 // the in-process server cannot shorten histories
	}
	// An abandoned fetch (see call) writes into repo, which is dropped.
	err = call(ctx, r.timeouts.Fetch, r.ssh, func(ctx context.Context, proxy transport.ProxyOptions) error {
		return remote.FetchContext(ctx, &git.FetchOptions{
			RefSpecs:     []config.RefSpec{config.RefSpec(src.String() + ":" + tracking.String())},
			Depth:        depth,
			Auth:         auth,
			CABundle:     r.caBundle,
			Tags:         git.NoTags,
			ProxyOptions: proxy,
		})
	})
	if err != nil {
		// An abandoned fetch (see call) that gets its pack yet finds
		// the store released, and closes the pack.
		release(repo)
	}
	if errors.Is(err, git.NoMatchingRefSpecError{}) {
		return nil, none, fmt.Errorf("%s %s: %w: branch %s does not exist", op, r.where, ErrNotFound, src.Short())
	}
	if err != nil {
		return nil, none, r.fail(ctx, op, err)
	}
	ref, err := repo.Reference(tracking, false)
	if err != nil {
		return nil, none, fmt.Errorf("%s %s: %w", op, r.where, err)
	}
	if err := repo.Storer.SetReference(plumbing.NewHashReference(r.branch, ref.Hash())); err != nil {
		return nil, none, fmt.Errorf("%s %s: %w", op, r.where, err)
	}
	return repo, ref.Hash(), nil
}

// single returns a clone holding only commit and its tree, copied from
// repo, as if commit had been fetched with depth 1. Keeping the commit's
// parent around would make every later push walk the chain of the daemon's
// commits since the last fetch (go-git walks the history it has from the
// remote's head), and memory grow with each commit.
//
// The copy shares repo's pack, and copies what repo holds in memory: the
// commit, its trees, and the blobs Commit wrote.
func (r *Repo) single(repo *git.Repository, commit *object.Commit) (*clone, error) {
	from, _ := repo.Storer.(*packStore)
	st := newPackStore(r.spool)
	if from != nil {
		st.pack = from.pack
	}
	out, err := git.Init(st, nil)
	if err != nil {
		return nil, err
	}
	if _, err := out.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{r.url}}); err != nil {
		return nil, err
	}
	var copyTree func(h plumbing.Hash) error
	copyObject := func(t plumbing.ObjectType, h plumbing.Hash) error {
		if _, err := st.EncodedObject(t, h); err == nil {
			return nil // already copied or in the shared pack, or seen twice
		}
		obj, err := repo.Storer.EncodedObject(t, h)
		if err != nil {
			return err
		}
		_, err = st.SetEncodedObject(obj)
		return err
	}
	copyTree = func(h plumbing.Hash) error {
		if err := copyObject(plumbing.TreeObject, h); err != nil {
			return err
		}
		t, err := object.GetTree(st, h)
		if err != nil {
			return err
		}
		for _, e := range t.Entries {
			switch e.Mode {
			case filemode.Dir:
				err = copyTree(e.Hash)
			case filemode.Submodule:
				// A submodule's commit lives in another repository.
			default:
				err = copyObject(plumbing.BlobObject, e.Hash)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := copyObject(plumbing.CommitObject, commit.Hash); err != nil {
		return nil, err
	}
	if err := copyTree(commit.TreeHash); err != nil {
		return nil, err
	}
	if err := st.SetShallow([]plumbing.Hash{commit.Hash}); err != nil {
		return nil, err
	}
	tracking := plumbing.NewRemoteReferenceName("origin", r.branch.Short())
	for _, name := range []plumbing.ReferenceName{r.branch, tracking} {
		if err := st.SetReference(plumbing.NewHashReference(name, commit.Hash)); err != nil {
			return nil, err
		}
	}
	return newClone(out, commit.Hash)
}

// copyOf returns a copy of c in a storage of its own, or nil (the next
// call then fetches) should the copy fail.
func (r *Repo) copyOf(c *clone) *clone {
	out, err := r.single(c.repo, c.head)
	if err != nil {
		return nil
	}
	out.fresh = c.fresh
	return out
}

// replace makes c the current clone, and releases the pack of the one it
// replaces unless c shares it. Only Sync and Commit, holding mu, replace the
// clone, and nothing reads a clone once replaced but an abandoned push
// (see call), which then fails.
func (r *Repo) replace(c *clone) {
	old := r.cur
	r.cur = c
	if old == nil || c == nil {
		return
	}
	if a, b := storeOf(old.repo), storeOf(c.repo); a != nil && (b == nil || a.pack != b.pack) {
		a.release()
	}
}

// release releases the pack of a repository fetchInto made.
func release(repo *git.Repository) {
	if s := storeOf(repo); s != nil {
		s.release()
	}
}

func storeOf(repo *git.Repository) *packStore {
	s, _ := repo.Storer.(*packStore)
	return s
}

func newClone(repo *git.Repository, head plumbing.Hash) (*clone, error) {
	commit, err := repo.CommitObject(head)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", head, err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s: %w", head, err)
	}
	return &clone{repo: repo, head: commit, tree: tree}, nil
}

// snapshot reads c's plan files and decides Own against the previous
// snapshot.
func (r *Repo) snapshot(c *clone, known Known) (Snapshot, error) {
	files, err := planFilesKnown(c.repo.Storer, c.tree, r.path, r.maxFile, known)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read plans at %s: %w", c.head.Hash, err)
	}
	s := Snapshot{
		Commit:  Hash(c.head.Hash.String()),
		Author:  Signature{Name: c.head.Author.Name, Email: c.head.Author.Email},
		Message: c.head.Message,
		Time:    c.head.Committer.When,
		Files:   files,
		Changed: true,
		Own:     r.ownSince(c.head),
		Person:  r.personBelow(c.head.Hash),
	}
	return s, nil
}

// personBelow follows the commits this Repo pushed down from head to the
// first it did not push.
func (r *Repo) personBelow(head plumbing.Hash) Hash {
	at := head
	for range 1000 {
		parent, ok := r.own[at]
		if !ok {
			break
		}
		at = parent
	}
	return Hash(at.String())
}

// ownSince reports whether every commit from head down to the previous
// snapshot is a bot commit. With a depth-1 clone only head itself can be
// read; the commits below it are known only if this Repo pushed them, so a
// chain of bot commits from another process reads as not own, which costs
// one needless evaluation and never hides a person's change.
func (r *Repo) ownSince(head *object.Commit) bool {
	if r.snap == nil || !isBot(head.Message) || len(head.ParentHashes) != 1 {
		return false
	}
	prev := plumbing.NewHash(string(r.snap.Commit))
	at := head.ParentHashes[0]
	for range 1000 {
		if at == prev {
			return true
		}
		parent, ok := r.own[at]
		if !ok {
			return false
		}
		at = parent
	}
	return false
}

// planFiles lists the plan files under p in tree, whose objects are in st,
// like ReadPlans; a file larger than max has its Size and no Data.
func planFiles(st storer.EncodedObjectStorer, tree *object.Tree, p string, max int64) ([]plan.Source, error) {
	return planFilesKnown(st, tree, p, max, nil)
}

// planFilesKnown is planFiles, leaving unread the files known reports
// (nil: none).
func planFilesKnown(st storer.EncodedObjectStorer, tree *object.Tree, p string, max int64, known Known) ([]plan.Source, error) {
	source := func(path string, h plumbing.Hash) (plan.Source, error) {
		if known != nil && known(path, Hash(h.String())) {
			return knownSource(st, path, h)
		}
		return planSource(st, path, h, max)
	}
	prefix := ""
	if p != "." {
		parent, entry, err := find(tree, p)
		if err != nil {
			return nil, err
		}
		if entry == nil {
			return nil, nil
		}
		if entry.Mode != filemode.Dir {
			if !isPlanFile(p, entry.Mode) {
				return nil, nil
			}
			src, err := source(p, entry.Hash)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", p, err)
			}
			src.Discovered = true
			return []plan.Source{src}, nil
		}
		if tree, err = parent.Tree(entry.Name); err != nil {
			return nil, err
		}
		prefix = p + "/"
	}
	var sources []plan.Source
	err := plansIn(tree, func(name string, h plumbing.Hash) error {
		src, err := source(prefix+name, h)
		if err != nil {
			return fmt.Errorf("read %s: %w", prefix+name, err)
		}
		src.Discovered = true
		sources = append(sources, src)
		return nil
	})
	return sources, err
}

// Commit builds req's change on the branch head, commits it with the head
// as its single parent and pushes it. The push succeeds only if the branch
// is still at that parent (go-git's RequireRemoteRefs, then the server's
// own compare-and-swap of the ref), so it is always a fast-forward and
// never a force-push. When it loses that race Commit fetches the new head,
// calls req.Changes again on the new tree and retries: at most 6 pushes,
// waiting a jittered exponential backoff from 50ms between pushes that lost
// to a concurrent push (a push that failed only because the Repo's copy of
// the head was old is retried at once).
//
// A change that leaves the tree as it is makes no commit: Commit returns
// the current head. The returned error wraps ErrNonFastForward when every
// try lost a race, ErrNotFound when the branch is gone.
func (r *Repo) Commit(ctx context.Context, req CommitRequest) (Hash, error) {
	if req.Changes == nil {
		return "", errors.New("commit: no changes function")
	}
	msg, err := formatMessage(req.Message, req.Trailers, !req.ByPerson)
	if err != nil {
		return "", fmt.Errorf("commit to %s: %w", r.where, err)
	}
	if req.Author.Name == "" || req.Author.Email == "" {
		return "", fmt.Errorf("commit to %s: the author needs a name and an email", r.where)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		if r.cur, err = r.fetch(ctx); err != nil {
			return "", err
		}
	}
	backoff := r.backoff
	for attempt := 1; ; attempt++ {
		base := r.cur
		commit, err := r.build(base, req, msg)
		if err != nil {
			return "", fmt.Errorf("commit to %s: %w", r.where, err)
		}
		if commit == nil {
			// Nothing to change on the tree we have; make sure it is
			// the branch's current tree before calling it a no-op.
			head, err := r.Head(ctx)
			if err != nil {
				return "", err
			}
			if string(head) == base.head.Hash.String() {
				return head, nil
			}
		} else {
			err := r.push(ctx, base, commit)
			if err == nil {
				if !req.ByPerson {
					r.own[commit.Hash] = base.head.Hash
				}
				// Should the copy fail (it only moves objects between
				// two memory storages), the next call refetches.
				r.cur, _ = r.single(base.repo, commit)
				return Hash(commit.Hash.String()), nil
			}
			// The clone the push read may still be in use (see
			// push): carry on with a copy of it.
			r.cur = r.copyOf(base)
			classified := r.fail(ctx, "push to", err)
			if !errors.Is(classified, ErrNonFastForward) {
				return "", classified
			}
			if r.onRetry != nil {
				r.onRetry(attempt, err)
			}
			if attempt >= r.tries {
				return "", fmt.Errorf("commit to %s: gave up after %d tries: %w", r.where, attempt, classified)
			}
			// The first rejection usually means only that our copy
			// of the head was old: refetch at once. Later ones mean
			// someone keeps pushing between our fetch and our push:
			// back off.
			if attempt > 1 {
				if err := sleep(ctx, jitter(backoff)); err != nil {
					return "", fmt.Errorf("commit to %s: %w (after: %v)", r.where, err, classified)
				}
				backoff *= 2
			}
		}
		if attempt >= r.tries {
			return "", fmt.Errorf("commit to %s: gave up after %d tries: the branch kept moving", r.where, attempt)
		}
		c, err := r.fetch(ctx)
		if err != nil {
			return "", err
		}
		r.replace(c)
	}
}

// build applies req's change to base's tree and writes the commit into
// base's storage. It returns nil when the tree does not change.
func (r *Repo) build(base *clone, req CommitRequest, msg string) (*object.Commit, error) {
	read := func(p string) ([]byte, error) { return readFile(base.repo.Storer, base.tree, p, r.maxFile) }
	changes, err := req.Changes(read)
	if err != nil {
		return nil, err
	}
	st := base.repo.Storer
	treeHash, err := writeTree(st, base.tree, changes)
	if err != nil {
		return nil, err
	}
	if treeHash == base.tree.Hash {
		return nil, nil
	}
	h, err := storeCommit(st, req.Author, req.Committer, r.now(), msg, treeHash, base.head.Hash, r.signKey)
	if err != nil {
		return nil, err
	}
	return object.GetCommit(st, h)
}

// push sends commit to the branch, provided the branch is still at base.
func (r *Repo) push(ctx context.Context, base *clone, commit *object.Commit) error {
	auth, err := r.creds.auth()
	if err != nil {
		return fmt.Errorf("push to %s: %w", r.where, err)
	}
	st := base.repo.Storer
	if err := st.SetReference(plumbing.NewHashReference(r.branch, commit.Hash)); err != nil {
		return err
	}
	remote, err := base.repo.Remote("origin")
	if err != nil {
		return err
	}
	// No "+": go-git refuses a non-fast-forward itself, and
	// RequireRemoteRefs makes the push conditional on the branch being
	// exactly at our parent when the server advertises it. The server
	// then updates the ref only if it is still there. A new branch is
	// pushed as a creation, which the server refuses if the branch
	// appeared meanwhile.
	var require []config.RefSpec
	if !base.fresh {
		require = []config.RefSpec{config.RefSpec(base.head.Hash.String() + ":" + r.branch.String())}
	}
	// An abandoned push (see call) may still read base's objects and
	// write its references: Commit replaces base after any failed push.
	err = call(ctx, r.timeouts.Push, r.ssh, func(ctx context.Context, proxy transport.ProxyOptions) error {
		return remote.PushContext(ctx, &git.PushOptions{
			RemoteName:        "origin",
			RefSpecs:          []config.RefSpec{config.RefSpec(r.branch.String() + ":" + r.branch.String())},
			RequireRemoteRefs: require,
			Auth:              auth,
			CABundle:          r.caBundle,
			ProxyOptions:      proxy,
		})
	})
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return errors.New("push reported nothing to update")
	}
	return err
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// jitter spreads d over [d/2, 3d/2), so that two writers that lost the
// same race do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}
