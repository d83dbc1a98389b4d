package reconcile

import (
	"context"
	"encoding/json"
	"sort"
	"sync"

	"github.com/hal9ai/hal9-migrate/store"
)

// memStore is a store.Store in memory for engine tests. Records are copied
// through JSON, as a real store would, so tests cannot share maps with it.
type memStore struct {
	mu      sync.Mutex
	records map[string][]byte
	history []store.Event
	seq     int64
}

func newMemStore() *memStore { return &memStore{records: map[string][]byte{}} }

func (m *memStore) Load(ctx context.Context, name string) (store.Record, error) {
	if err := ctx.Err(); err != nil {
		return store.Record{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var rec store.Record
	if b, ok := m.records[name]; ok {
		err := json.Unmarshal(b, &rec)
		return rec, err
	}
	return store.Record{Plan: name}, nil
}

func (m *memStore) LoadAll(ctx context.Context) ([]store.Record, error) {
	m.mu.Lock()
	names := make([]string, 0, len(m.records))
	for n := range m.records {
		names = append(names, n)
	}
	m.mu.Unlock()
	sort.Strings(names)
	var out []store.Record
	for _, n := range names {
		rec, err := m.Load(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

func (m *memStore) Save(ctx context.Context, rec store.Record, events ...store.Event) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var old store.Record
	if b, ok := m.records[rec.Plan]; ok {
		_ = json.Unmarshal(b, &old)
	}
	if old.Version != rec.Version {
		return 0, store.ErrConflict
	}
	rec.Version++
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	m.records[rec.Plan] = b
	for _, e := range events {
		m.seq++
		e.Seq = m.seq
		m.history = append(m.history, e)
	}
	return rec.Version, nil
}

func (m *memStore) History(_ context.Context, name string, limit int) ([]store.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Event
	for _, e := range m.history {
		if e.Plan == name {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

func (m *memStore) Close() error { return nil }

var _ store.Store = (*memStore)(nil)
