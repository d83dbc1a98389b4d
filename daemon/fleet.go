package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// KnownSyncer is a repository that can leave unread the plan files whose
// content the daemon holds already (gitops.Repo has it): at a new head of
// a repository of thousands of plans, only the files that changed are
// inflated from the pack, and the snapshot holds no second copy of the
// others.
type KnownSyncer interface {
	SyncKnown(ctx context.Context, known gitops.Known) (gitops.Snapshot, error)
}

// PlanBatchKeeper keeps many plans in one transaction (store.SQL has it):
// a first sync of thousands of plans then waits for one write to disk.
type PlanBatchKeeper interface {
	SavePlans(ctx context.Context, kps []store.KeptPlan) error
}

// fleetState is what spares a sync of many plans the work its files did
// not change: the outcome of checking each file on its own (a parse and,
// for some, a CUE evaluation), and the SHA-256 sums that versions are
// kept by, by blob. The Git loop alone uses it.
type fleetState struct {
	cache *plan.Cache
	// sums holds the SHA-256 sum of the content of each blob at the head
	// last synced; next those asked for in this sync, which replace them.
	sums, next map[string]string

	// built is each plan's status as commitStatus last built it, and
	// statusAt when it last committed, under d.mu.
	built    map[string]*statusBuilt
	statusAt time.Time
}

// statusBuilt is a plan's status file as commitStatus last built it, and
// what from: the record's version and statusInputsLocked. body is let go
// once written (sum stays, to compare).
type statusBuilt struct {
	version int64
	inputs  string
	body    []byte
	sum     string
	state   string
	conds   string
	summary string
	// rolledBack says the record it was built from is a rollback to
	// position (applied, or under way) under commit, decided at failedAt
	// (see rollbackAhead).
	rolledBack bool
	position   plan.Position
	commit     string
	failedAt   time.Time
}

// forgetStatus drops what was built of the status of plans no longer
// followed. It holds d.mu.
func (f *fleetState) forgetStatus(snap []*reconcile.Desired) {
	if len(f.built) == 0 {
		return
	}
	now := make(map[string]bool, len(snap))
	for _, ds := range snap {
		now[ds.Plan.Metadata.Name] = true
	}
	for name := range f.built {
		if !now[name] {
			delete(f.built, name)
		}
	}
}

// parsed is the cache of checked files, made on first use.
func (f *fleetState) parsed() *plan.Cache {
	if f.cache == nil {
		f.cache = plan.NewCache(0)
	}
	return f.cache
}

// sum is a plan file's content as versions keep it: its SHA-256 sum, or
// its size when it was too large to read. A blob seen at the previous
// head is not hashed again.
func (f *fleetState) sum(src plan.Source) string {
	if src.Size > 0 && len(src.Data) == 0 {
		return fmt.Sprintf("size:%d", src.Size)
	}
	if f.next == nil {
		f.next = map[string]string{}
	}
	if src.Blob != "" {
		if s, ok := f.sums[src.Blob]; ok {
			f.next[src.Blob] = s
			return s
		}
	}
	s := digest(src.Data)
	if src.Blob != "" {
		f.next[src.Blob] = s
	}
	return s
}

// settle keeps the sums of this sync's blobs, and forgets the others.
func (f *fleetState) settle() {
	f.sums, f.next = f.next, nil
}

// syncGit takes the snapshot of the branch head. When the repository can,
// the files whose blob is the one followed already are not read: their
// bytes are those followed, shared rather than copied.
func (d *Daemon) syncGit(ctx context.Context) (gitops.Snapshot, error) {
	ks, ok := d.Git.(KnownSyncer)
	if !ok {
		return d.Git.Sync(ctx)
	}
	d.mu.Lock()
	held := make(map[string]followed, len(d.byFile))
	for path, f := range d.byFile {
		if f.blob != "" && len(f.data) > 0 {
			held[path] = f
		}
	}
	d.mu.Unlock()
	snap, err := ks.SyncKnown(ctx, func(path string, blob gitops.Hash) bool {
		f, ok := held[path]
		return ok && f.blob == string(blob)
	})
	if err != nil {
		return snap, err
	}
	// The snapshot's files are shared with the repository's later
	// snapshots: fill a copy of the list.
	files := make([]plan.Source, len(snap.Files))
	for i, src := range snap.Files {
		if len(src.Data) == 0 && src.Blob != "" {
			if f, ok := held[src.Path]; ok && f.blob == src.Blob {
				src.Data, src.Size = f.data, 0
			}
		}
		files[i] = src
	}
	snap.Files = files
	return snap, nil
}
