// Package storetest is the conformance suite every store.Store passes. A back
// end's test calls Run with a Backend; the suite runs each case on a fresh,
// empty database. It checks behaviour through the Store interface only.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// Backend makes a fresh, empty database for one test and returns a function
// that opens it. Every call of open returns a new Store on that same
// database, so the suite can close a store and open the data again, or use
// two stores at once as two daemons would. The suite closes what it opens.
type Backend func(t *testing.T) (open func(ctx context.Context) (store.Store, error))

// Run runs the conformance suite against a back end.
func Run(t *testing.T, backend Backend) {
	cases := []struct {
		name string
		test func(t *testing.T, h *harness)
	}{
		{"UnknownPlan", testUnknownPlan},
		{"RoundTrip", testRoundTrip},
		{"Versions", testVersions},
		{"StaleVersion", testStaleVersion},
		{"InvalidSave", testInvalidSave},
		{"ConcurrentSave", testConcurrentSave},
		{"ConcurrentSaveTwoStores", testConcurrentSaveTwoStores},
		{"History", testHistory},
		{"HistoryPerPlan", testHistoryPerPlan},
		{"LoadAllSorted", testLoadAllSorted},
		{"Canceled", testCanceled},
		{"Reopen", testReopen},
		{"KeptPlans", testKeptPlans},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &harness{t: t, open: backend(t)}
			c.test(t, h)
		})
	}
}

// harness opens stores on one test's database and closes them at the end.
type harness struct {
	t    *testing.T
	open func(ctx context.Context) (store.Store, error)
}

func (h *harness) store() store.Store {
	h.t.Helper()
	s, err := h.open(h.t.Context())
	if err != nil {
		h.t.Fatalf("open store: %v", err)
	}
	h.t.Cleanup(func() {
		if err := s.Close(); err != nil {
			h.t.Errorf("close store: %v", err)
		}
	})
	return s
}

// zone is away from UTC, and the nanoseconds below a microsecond are set,
// so the suite sees the store normalise instants.
var zone = time.FixedZone("UTC+5:30", 5*3600+30*60)

func at(minute int) time.Time {
	return time.Date(2026, 3, 14, 15, minute, 26, 535897932, zone)
}

// stored is t as a store returns it: UTC, to the microsecond.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// fullRecord sets every field of a Record; times go through tf.
func fullRecord(name string, tf func(time.Time) time.Time) store.Record {
	return store.Record{
		Plan:       name,
		Position:   plan.Position{Phase: "canary", Percentage: 25},
		Pending:    &plan.Position{Phase: "canary", Percentage: 35},
		EnteredAt:  tf(at(1)),
		GreenSince: tf(at(2)),
		Commit:     "0123456789abcdef0123456789abcdef01234567",
		Status:     "Progressing",
		Reason:     "canary 25% soaked 24h with every guardrail green",
		Failed: []store.Failure{
			{Position: plan.Position{Phase: "canary", Percentage: 35}, Commit: "feedface", Reason: "error-rate 0.07 > 0.05 for 5m", At: tf(at(3))},
			{Position: plan.Position{}, Commit: "deadbeef", Reason: "a start position", At: tf(at(4))},
		},
		Checkpoints: map[string]store.Checkpoint{
			"pre-canary": {Name: "pre-canary", Position: plan.Position{Phase: "shadow", Percentage: 0}, At: tf(at(5)),
				Data: []byte{0, 1, 2, 0xff, '"', '\n'}},
			"pre-state-migration": {Name: "pre-state-migration", Position: plan.Position{Phase: "canary", Percentage: 35}, At: tf(at(6)),
				Data: []byte(`{"replicas":{"stable":3,"candidate":1}}`)},
		},
		Job: &store.Job{ID: "job-1", Phase: "state-migration", StartedAt: tf(at(7)), Done: true, Succeeded: true,
			Message: "exit 0", Logs: "line 1\nline 2 — ünïcode\n"},
		Checks: map[string]store.CheckResult{
			"data-integrity":    {Passed: true, Message: "ok", At: tf(at(8))},
			"state-consistency": {Passed: false, Message: "3 rows differ", At: tf(at(9))},
		},
		Flags:          map[string]int{"hierarchical_neurons": 10, "substrate_abstraction": 25},
		Decommissioned: true,
		UpdatedAt:      tf(at(10)),
	}
}

func identity(t time.Time) time.Time { return t }

func event(name string, i int) store.Event {
	return store.Event{
		Plan:   name,
		At:     at(i % 60),
		Kind:   "Advanced",
		From:   plan.Position{Phase: "canary", Percentage: i},
		To:     plan.Position{Phase: "canary", Percentage: i + 1},
		Commit: fmt.Sprintf("commit-%d", i),
		Reason: fmt.Sprintf("event %d of %s", i, name),
		Data:   []byte(fmt.Sprintf(`{"i":%d}`, i)),
	}
}

// storedEvent is ev as History returns it, but for Seq.
func storedEvent(ev store.Event) store.Event {
	ev.At = stored(ev.At)
	return ev
}

func mustLoad(t *testing.T, s store.Store, name string) store.Record {
	t.Helper()
	rec, err := s.Load(t.Context(), name)
	if err != nil {
		t.Fatalf("Load(%q): %v", name, err)
	}
	return rec
}

func mustSave(t *testing.T, s store.Store, rec store.Record, events ...store.Event) int64 {
	t.Helper()
	v, err := s.Save(t.Context(), rec, events...)
	if err != nil {
		t.Fatalf("Save(%q, version %d): %v", rec.Plan, rec.Version, err)
	}
	if v != rec.Version+1 {
		t.Fatalf("Save(%q, version %d) = version %d, want %d", rec.Plan, rec.Version, v, rec.Version+1)
	}
	return v
}

func mustHistory(t *testing.T, s store.Store, name string, limit int) []store.Event {
	t.Helper()
	evs, err := s.History(t.Context(), name, limit)
	if err != nil {
		t.Fatalf("History(%q, %d): %v", name, limit, err)
	}
	return evs
}

// withoutSeq checks that Seq increases strictly and returns the events with
// Seq cleared, for comparison.
func withoutSeq(t *testing.T, evs []store.Event) []store.Event {
	t.Helper()
	out := make([]store.Event, len(evs))
	for i, ev := range evs {
		if i > 0 && ev.Seq <= evs[i-1].Seq {
			t.Errorf("event %d has Seq %d, not after %d", i, ev.Seq, evs[i-1].Seq)
		}
		ev.Seq = 0
		out[i] = ev
	}
	return out
}

func equal[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func testUnknownPlan(t *testing.T, h *harness) {
	s := h.store()
	equal(t, "Load of an unknown plan", mustLoad(t, s, "nowhere"), store.Record{Plan: "nowhere"})
	if evs := mustHistory(t, s, "nowhere", 0); len(evs) != 0 {
		t.Errorf("History of an unknown plan = %v, want none", evs)
	}
	recs, err := s.LoadAll(t.Context())
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	if len(recs) != 0 {
		t.Errorf("LoadAll of an empty store = %v, want none", recs)
	}
}

func testRoundTrip(t *testing.T, h *harness) {
	s := h.store()
	in := fullRecord("hal9", identity)
	orig := fullRecord("hal9", identity)
	mustSave(t, s, in)
	equal(t, "Save's argument afterwards", in, orig)

	want := fullRecord("hal9", stored)
	want.Version = 1
	equal(t, "Load after Save", mustLoad(t, s, "hal9"), want)

	recs, err := s.LoadAll(t.Context())
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	equal(t, "LoadAll after Save", recs, []store.Record{want})

	// A record with nothing set but its plan comes back as it went in.
	mustSave(t, s, store.Record{Plan: "empty"})
	equal(t, "Load of an empty record", mustLoad(t, s, "empty"), store.Record{Plan: "empty", Version: 1})
}

func testVersions(t *testing.T, h *harness) {
	s := h.store()
	rec := store.Record{Plan: "p"}
	for want := int64(1); want <= 5; want++ {
		rec.Reason = fmt.Sprintf("save %d", want)
		rec.Version = mustSave(t, s, rec)
		got := mustLoad(t, s, "p")
		if got.Version != want || got.Reason != rec.Reason {
			t.Fatalf("after save %d: Load = version %d reason %q", want, got.Version, got.Reason)
		}
	}
	// Fields cleared in a later save are cleared in the store.
	full := fullRecord("p", stored)
	full.Version = rec.Version
	full.Version = mustSave(t, s, full)
	cleared := store.Record{Plan: "p", Version: full.Version}
	cleared.Version = mustSave(t, s, cleared)
	equal(t, "Load after clearing", mustLoad(t, s, "p"), cleared)
}

func testStaleVersion(t *testing.T, h *harness) {
	s := h.store()
	rec := store.Record{Plan: "p", Reason: "first"}
	rec.Version = mustSave(t, s, rec, event("p", 1))
	rec.Reason = "second"
	rec.Version = mustSave(t, s, rec, event("p", 2))
	before := mustLoad(t, s, "p")
	history := mustHistory(t, s, "p", 0)

	for _, v := range []int64{0, 1, 3, 100} {
		stale := fullRecord("p", identity)
		stale.Version = v
		_, err := s.Save(t.Context(), stale, event("p", 3))
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("Save at version %d of a record at version 2: err = %v, want ErrConflict", v, err)
		}
	}
	equal(t, "record after refused saves", mustLoad(t, s, "p"), before)
	equal(t, "history after refused saves", mustHistory(t, s, "p", 0), history)

	// A plan never saved has no version but 0.
	_, err := s.Save(t.Context(), store.Record{Plan: "new", Version: 1}, event("new", 1))
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("Save at version 1 of an unknown plan: err = %v, want ErrConflict", err)
	}
	equal(t, "unknown plan after a refused save", mustLoad(t, s, "new"), store.Record{Plan: "new"})
	if evs := mustHistory(t, s, "new", 0); len(evs) != 0 {
		t.Errorf("history of an unknown plan after a refused save = %v, want none", evs)
	}
}

func testInvalidSave(t *testing.T, h *harness) {
	s := h.store()
	bad := []struct {
		what   string
		rec    store.Record
		events []store.Event
	}{
		{"no plan name", store.Record{}, nil},
		{"a negative version", store.Record{Plan: "p", Version: -1}, nil},
		{"an event of another plan", store.Record{Plan: "p"}, []store.Event{event("p", 1), event("q", 2)}},
	}
	for _, b := range bad {
		if _, err := s.Save(t.Context(), b.rec, b.events...); err == nil {
			t.Errorf("Save with %s succeeded, want an error", b.what)
		} else if errors.Is(err, store.ErrConflict) {
			t.Errorf("Save with %s: err = %v, want an error other than ErrConflict", b.what, err)
		}
	}
	equal(t, "record after invalid saves", mustLoad(t, s, "p"), store.Record{Plan: "p"})
	if evs := mustHistory(t, s, "p", 0); len(evs) != 0 {
		t.Errorf("history after invalid saves = %v, want none", evs)
	}

	// An event with no plan belongs to the record's.
	ev := event("", 1)
	mustSave(t, s, store.Record{Plan: "p"}, ev)
	ev.Plan = "p"
	equal(t, "event saved without a plan", withoutSeq(t, mustHistory(t, s, "p", 0)), []store.Event{storedEvent(ev)})
}

// race has every store save the record at the same version at once, rounds
// times, and checks that each round has exactly one winner.
func race(t *testing.T, stores []store.Store, writers, rounds int) {
	const name = "contended"
	for round := range rounds {
		base := mustLoad(t, stores[0], name)
		if base.Version != int64(round) {
			t.Fatalf("round %d: record at version %d", round, base.Version)
		}
		var (
			start = make(chan struct{})
			wg    sync.WaitGroup
			mu    sync.Mutex
			wins  []int
			errs  []error
		)
		for w := range writers {
			s := stores[w%len(stores)]
			wg.Go(func() {
				rec := base
				rec.Reason = fmt.Sprintf("round %d writer %d", round, w)
				ev := event(name, round)
				ev.Reason = rec.Reason
				<-start
				v, err := s.Save(t.Context(), rec, ev)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && v == base.Version+1:
					wins = append(wins, w)
				case errors.Is(err, store.ErrConflict):
				default:
					errs = append(errs, fmt.Errorf("writer %d: version %d, %w", w, v, err))
				}
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			t.Errorf("round %d: Save: %v", round, err)
		}
		if len(wins) != 1 {
			t.Fatalf("round %d: %d writers won (%v), want exactly 1", round, len(wins), wins)
		}
		got := mustLoad(t, stores[len(stores)-1], name)
		want := fmt.Sprintf("round %d writer %d", round, wins[0])
		if got.Version != base.Version+1 || got.Reason != want {
			t.Fatalf("round %d: Load = version %d reason %q, want version %d reason %q",
				round, got.Version, got.Reason, base.Version+1, want)
		}
		evs := mustHistory(t, stores[0], name, 0)
		if len(evs) != round+1 || evs[round].Reason != want {
			t.Fatalf("round %d: history has %d events, last %+v; want %d, last with reason %q",
				round, len(evs), evs[len(evs)-1], round+1, want)
		}
	}
}

func testConcurrentSave(t *testing.T, h *harness) {
	race(t, []store.Store{h.store()}, 8, 10)
}

// testConcurrentSaveTwoStores is two daemons sharing one database.
func testConcurrentSaveTwoStores(t *testing.T, h *harness) {
	// Open them at once too: both may find the database unmigrated.
	var (
		stores [2]store.Store
		errs   [2]error
		wg     sync.WaitGroup
	)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = h.open(t.Context()) })
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("open store %d: %v", i, errs[i])
		}
		t.Cleanup(func() { s.Close() })
	}
	race(t, stores[:], 8, 10)
}

func testHistory(t *testing.T, h *harness) {
	s := h.store()
	var want []store.Event
	rec := store.Record{Plan: "p"}
	// Three events in one save, none in the next, then one at a time.
	batch := []store.Event{event("p", 0), event("p", 1), event("p", 2)}
	batch[1].From, batch[1].To = plan.Position{}, plan.Position{Phase: "shadow"} // Start round-trips
	batch[2].Data, batch[2].Commit = nil, ""
	rec.Version = mustSave(t, s, rec, batch...)
	rec.Version = mustSave(t, s, rec)
	for _, ev := range batch {
		want = append(want, storedEvent(ev))
	}
	for i := 3; i < 7; i++ {
		ev := event("p", i)
		rec.Version = mustSave(t, s, rec, ev)
		want = append(want, storedEvent(ev))
	}

	all := mustHistory(t, s, "p", 0)
	equal(t, "History(0)", withoutSeq(t, all), want)
	equal(t, "History(-1)", mustHistory(t, s, "p", -1), all)
	equal(t, "History(len)", mustHistory(t, s, "p", len(all)), all)
	equal(t, "History(len+5)", mustHistory(t, s, "p", len(all)+5), all)
	equal(t, "History(1)", mustHistory(t, s, "p", 1), all[len(all)-1:])
	equal(t, "History(3)", mustHistory(t, s, "p", 3), all[len(all)-3:])
}

func testHistoryPerPlan(t *testing.T, h *harness) {
	s := h.store()
	recs := map[string]*store.Record{"a": {Plan: "a"}, "b": {Plan: "b"}}
	want := map[string][]store.Event{}
	for i := range 10 {
		name := "a"
		if i%3 == 0 {
			name = "b"
		}
		ev := event(name, i)
		recs[name].Version = mustSave(t, s, *recs[name], ev)
		want[name] = append(want[name], storedEvent(ev))
	}
	for name, evs := range want {
		equal(t, "History("+name+")", withoutSeq(t, mustHistory(t, s, name, 0)), evs)
		equal(t, "History("+name+", 2)", withoutSeq(t, mustHistory(t, s, name, 2)), evs[len(evs)-2:])
	}
}

func testLoadAllSorted(t *testing.T, h *harness) {
	s := h.store()
	// Byte order, whatever the database's collation: "a-c" before "ab".
	names := []string{"b", "ab", "a-c", "a", "z9", "aa", "a0"}
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, n := range names {
		mustSave(t, s, store.Record{Plan: n, Reason: "plan " + n})
	}
	recs, err := s.LoadAll(t.Context())
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Plan)
		if r.Version != 1 || r.Reason != "plan "+r.Plan {
			t.Errorf("LoadAll: %s at version %d reason %q", r.Plan, r.Version, r.Reason)
		}
	}
	equal(t, "LoadAll order", got, []string{"a", "a-c", "a0", "aa", "ab", "b", "z9"})
}

func testCanceled(t *testing.T, h *harness) {
	s := h.store()
	rec := store.Record{Plan: "p", Reason: "before"}
	rec.Version = mustSave(t, s, rec, event("p", 1))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: err = %v, want context.Canceled", what, err)
		}
	}
	_, err := s.Load(ctx, "p")
	check("Load", err)
	_, err = s.LoadAll(ctx)
	check("LoadAll", err)
	_, err = s.History(ctx, "p", 0)
	check("History", err)
	changed := rec
	changed.Reason = "after"
	_, err = s.Save(ctx, changed, event("p", 2))
	check("Save", err)

	// Nothing was written, and the store still works.
	equal(t, "record after a canceled Save", mustLoad(t, s, "p").Reason, "before")
	if n := len(mustHistory(t, s, "p", 0)); n != 1 {
		t.Errorf("history after a canceled Save has %d events, want 1", n)
	}
	mustSave(t, s, changed, event("p", 2))
}

func testReopen(t *testing.T, h *harness) {
	s := h.store()
	rec := fullRecord("p", identity)
	rec.Version = mustSave(t, s, rec, event("p", 1), event("p", 2))
	other := store.Record{Plan: "q", Reason: "other"}
	other.Version = mustSave(t, s, other, event("q", 1))
	history := mustHistory(t, s, "p", 0)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = h.store()
	want := fullRecord("p", stored)
	want.Version = 1
	equal(t, "Load after reopening", mustLoad(t, s, "p"), want)
	equal(t, "Load of another plan after reopening", mustLoad(t, s, "q").Reason, "other")
	equal(t, "History after reopening", mustHistory(t, s, "p", 0), history)

	// The version survived too: a stale save still conflicts, the next one
	// works and its event comes after the old ones.
	if _, err := s.Save(t.Context(), store.Record{Plan: "p"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Save at version 0 after reopening: err = %v, want ErrConflict", err)
	}
	want.Version = mustSave(t, s, want, event("p", 3))
	evs := mustHistory(t, s, "p", 0)
	if len(evs) != 3 || evs[2].Seq <= history[1].Seq {
		t.Errorf("history after a save after reopening = %+v, want 3 events in order", evs)
	}
}

// keeper is what the daemon needs of a store to keep the last good plans;
// every back end has it.
type keeper interface {
	SavePlan(ctx context.Context, kp store.KeptPlan) error
	DeletePlan(ctx context.Context, planName string) error
	LoadPlans(ctx context.Context) ([]store.KeptPlan, error)
}

func testKeptPlans(t *testing.T, h *harness) {
	s, ok := h.store().(keeper)
	if !ok {
		t.Fatal("the store cannot keep plans")
	}
	ctx := t.Context()
	if got, err := s.LoadPlans(ctx); err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v %v", got, err)
	}
	shop := store.KeptPlan{Plan: "shop", File: "plans/shop.yaml", Data: []byte("apiVersion: x\n"), Commit: "abc",
		Digest: "d1", SavedAt: at(1).In(zone)}
	cart := store.KeptPlan{Plan: "cart", File: "plans/cart.json", Data: []byte("{}"), Target: "canary 5%", Commit: "def",
		Digest: "d2", Own: []string{"d3"}, SavedAt: at(2)}
	for _, kp := range []store.KeptPlan{shop, cart} {
		if err := s.SavePlan(ctx, kp); err != nil {
			t.Fatal(err)
		}
	}
	shop.Data, shop.Digest, shop.Own = []byte("apiVersion: y\n"), "d4", []string{"d1"}
	if err := s.SavePlan(ctx, shop); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadPlans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shop.SavedAt, cart.SavedAt = stored(shop.SavedAt), stored(cart.SavedAt)
	equal(t, "kept plans", got, []store.KeptPlan{cart, shop})
	if err := s.DeletePlan(ctx, "cart"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePlan(ctx, "never-kept"); err != nil {
		t.Fatal(err)
	}
	got, err = s.LoadPlans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "kept plans after forgetting cart", got, []store.KeptPlan{shop})
	if err := s.SavePlan(ctx, store.KeptPlan{}); err == nil {
		t.Fatal("a plan with no name was kept")
	}
}
