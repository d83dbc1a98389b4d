package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// benchRecord is a record of the size the daemon keeps: a position, two
// failures, two checkpoints, a job, checks and flags.
func benchRecord() store.Record {
	now := time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)
	return store.Record{
		Plan:       "hal9-hierarchical",
		Position:   plan.Position{Phase: "canary", Percentage: 25},
		Pending:    &plan.Position{Phase: "canary", Percentage: 35},
		EnteredAt:  now,
		GreenSince: now,
		Commit:     "0123456789abcdef0123456789abcdef01234567",
		Status:     "Progressing",
		Reason:     "canary 25% soaking with every guardrail green",
		Failed: []store.Failure{
			{Position: plan.Position{Phase: "canary", Percentage: 35}, Commit: "feedface", Reason: "error-rate 0.07 > 0.05 for 5m", At: now},
			{Position: plan.Position{Phase: "ramp-up", Percentage: 50}, Commit: "deadbeef", Reason: "latency-p99 0.061 > 0.050 for 5m", At: now},
		},
		Checkpoints: map[string]store.Checkpoint{
			"pre-canary":          {Name: "pre-canary", Position: plan.Position{Phase: "shadow"}, At: now, Data: make([]byte, 512)},
			"pre-state-migration": {Name: "pre-state-migration", Position: plan.Position{Phase: "canary", Percentage: 35}, At: now, Data: make([]byte, 512)},
		},
		Job:       &store.Job{ID: "job-1", Phase: "state-migration", StartedAt: now, Done: true, Succeeded: true, Message: "exit 0"},
		Checks:    map[string]store.CheckResult{"data-integrity": {Passed: true, At: now}, "state-consistency": {Passed: true, At: now}},
		Flags:     map[string]int{"hierarchical_neurons": 10, "substrate_abstraction": 25},
		UpdatedAt: now,
	}
}

func benchEvent() store.Event {
	return store.Event{
		At:     time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC),
		Kind:   "Advanced",
		From:   plan.Position{Phase: "canary", Percentage: 10},
		To:     plan.Position{Phase: "canary", Percentage: 25},
		Commit: "0123456789abcdef0123456789abcdef01234567",
		Reason: "canary 10% soaked 24h with every guardrail green",
		Data:   []byte(`{"error-rate":0.012,"latency-p99":0.031}`),
	}
}

func benchSQLite(b *testing.B) store.Store {
	s, err := store.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchLoad(b *testing.B, s store.Store) {
	ctx := context.Background()
	if _, err := s.Save(ctx, benchRecord()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(ctx, "hal9-hierarchical"); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSave saves a record with one event per iteration, as the daemon does
// on a transition.
func benchSave(b *testing.B, s store.Store) {
	ctx := context.Background()
	rec, ev := benchRecord(), benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		v, err := s.Save(ctx, rec, ev)
		if err != nil {
			b.Fatal(err)
		}
		rec.Version = v
	}
}

func BenchmarkSQLiteLoad(b *testing.B) { benchLoad(b, benchSQLite(b)) }
func BenchmarkSQLiteSave(b *testing.B) { benchSave(b, benchSQLite(b)) }

func benchPostgres(b *testing.B) store.Store {
	s, err := store.OpenPostgres(context.Background(), postgresDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkPostgresLoad(b *testing.B) { benchLoad(b, benchPostgres(b)) }
func BenchmarkPostgresSave(b *testing.B) { benchSave(b, benchPostgres(b)) }
