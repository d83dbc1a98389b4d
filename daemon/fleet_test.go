package daemon

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// TestSyncParsesOnlyChangedFiles follows a repository through the changes a
// fleet sees, counting the files the daemon parses: a person's change is
// parsed, the files it left alone and the daemon's own status commits are
// not; a broken edit leaves the last good version followed; a content
// changed back to an earlier one is followed as that one; a removed file
// leaves the cache.
func TestSyncParsesOnlyChangedFiles(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	base, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(string(base), "name: base", "name: other", 1)
	r.commitFiles(t, "another plan", map[string]string{"plans/other.yaml": other})
	cache := r.d.fleet.parsed()
	step := func(what string, parsed int64) {
		t.Helper()
		before := cache.Checks()
		if err := r.d.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.d.Step(ctx); err != nil { // and the status it committed
			t.Fatal(err)
		}
		if n := cache.Checks() - before; n != parsed {
			t.Errorf("%s: %d files parsed, want %d", what, n, parsed)
		}
	}
	flag := func() int {
		t.Helper()
		for _, ds := range r.d.snapshot() {
			if ds.Plan.Metadata.Name == "base" {
				return ds.Plan.Spec.Features["new_cart"]
			}
		}
		t.Fatal("base is not followed")
		return 0
	}
	step("first sync", 2)
	if len(r.d.snapshot()) != 2 || flag() != 10 {
		t.Fatalf("followed %d plans, new_cart %d", len(r.d.snapshot()), flag())
	}
	step("nothing changed but status", 0)

	r.person(t, "new_cart to 20", func(s string) string { return strings.Replace(s, "new_cart: 10", "new_cart: 20", 1) })
	step("one file changed", 1)
	if flag() != 20 {
		t.Fatalf("new_cart is %d after the change, want 20", flag())
	}

	r.person(t, "a broken bound", func(s string) string { return strings.Replace(s, "max: 0.05", "max: lots", 1) })
	step("a broken edit", 1)
	if flag() != 20 {
		t.Fatalf("new_cart is %d after a broken edit, want the last good 20", flag())
	}
	r.d.mu.Lock()
	_, invalid := r.d.invalid["plans/shop.yaml"]
	r.d.mu.Unlock()
	if !invalid {
		t.Fatal("the broken file is not reported invalid")
	}

	r.commitFiles(t, "back to the first version", map[string]string{"plans/shop.yaml": string(base)})
	step("changed back", 1)
	if flag() != 10 {
		t.Fatalf("new_cart is %d after changing back, want 10", flag())
	}

	r.commitFiles(t, "one plan less", map[string]string{"plans/other.yaml": ""})
	step("a file removed", 0)
	if cache.Len() != 1 {
		t.Fatalf("the cache holds %d files, want 1", cache.Len())
	}
}

// TestStatusMessageBounded checks that a status commit of many plans names
// a bounded number of them, the urgent ones first.
func TestStatusMessageBounded(t *testing.T) {
	var lines []statusLine
	for i := range 30 {
		lines = append(lines, statusLine{text: "p" + string(rune('a'+i%26)) + " Progressing", state: "Progressing"})
	}
	lines = append(lines, statusLine{text: "zz RolledBack at canary 5%", state: "RolledBack", urgent: true})
	msg := statusMessage(lines)
	got := strings.Split(msg, "\n")
	if got[0] != "status: 31 plans (30 Progressing, 1 RolledBack)" {
		t.Errorf("subject %q", got[0])
	}
	if len(got) != 2+statusLines+1 || got[2] != "zz RolledBack at canary 5%" || got[len(got)-1] != "and 11 more" {
		t.Errorf("message:\n%s", msg)
	}
	if short := statusMessage(lines[:2]); short != "status: pa Progressing; pb Progressing" {
		t.Errorf("two plans: %q", short)
	}
}

// countingStore counts the records and histories read.
type countingStore struct {
	*store.SQL
	loads, histories int
}

func (s *countingStore) Load(ctx context.Context, name string) (store.Record, error) {
	s.loads++
	return s.SQL.Load(ctx, name)
}

func (s *countingStore) History(ctx context.Context, name string, limit int) ([]store.Event, error) {
	s.histories++
	return s.SQL.History(ctx, name, limit)
}

// TestStatusCheckReadsOnlyChanges checks that the status check reads the
// record and history of a plan only when its record moved: with nothing
// changed, none.
func TestStatusCheckReadsOnlyChanges(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	cs := &countingStore{SQL: r.store.(*store.SQL)}
	r.d.Store = cs
	r.holdingAt10(t)
	if err := r.d.commitStatus(ctx, false); err != nil {
		t.Fatal(err)
	}
	cs.loads, cs.histories = 0, 0
	for range 3 {
		if err := r.d.commitStatus(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	if cs.loads != 0 || cs.histories != 0 {
		t.Fatalf("with nothing changed, the status check read %d records and %d histories", cs.loads, cs.histories)
	}
	// A record saved: read again, once.
	rec, err := r.store.Load(ctx, "base")
	if err != nil {
		t.Fatal(err)
	}
	rec.Reason = "touched"
	if _, err := r.store.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.d.commitStatus(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	if cs.loads != 1 || cs.histories != 1 {
		t.Fatalf("after one save, the status check read %d records and %d histories, want 1 and 1", cs.loads, cs.histories)
	}
}

// TestProgressOneCommitPerInterval checks that progress alone makes at
// most one status commit per StatusInterval across plans: a plan whose own
// interval has passed waits for the fleet's, when another plan's progress
// was committed less than an interval ago.
func TestProgressOneCommitPerInterval(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	base, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r.commitFiles(t, "another plan", map[string]string{"plans/other.yaml": strings.Replace(string(base), "name: base", "name: other", 1)})
	r.holdingAt10(t)
	for range 3 { // until the other plan is at rest too, and its status written
		if err := r.d.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	progress := func(name, reason string) {
		t.Helper()
		rec, err := r.store.Load(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		rec.Status, rec.Reason = reconcile.StatusProgressing, reason
		if _, err := r.store.Save(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, commits int) {
		t.Helper()
		before := r.commits(t)
		if err := r.d.commitStatus(ctx, false); err != nil {
			t.Fatal(err)
		}
		if n := r.commits(t) - before; n != commits {
			t.Errorf("%s: %d status commits, want %d", what, n, commits)
		}
	}
	r.clock.Step(2 * r.d.StatusInterval)
	progress("base", "one")
	check("the first progress", 1)
	r.clock.Step(r.d.StatusInterval / 2)
	progress("other", "two")
	check("another plan's progress within the interval", 0)
	r.clock.Step(r.d.StatusInterval / 2)
	check("the interval passed", 1)
}
