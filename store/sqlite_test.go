package store_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/store/storetest"
)

func sqliteBackend(t *testing.T) func(ctx context.Context) (store.Store, error) {
	path := filepath.Join(t.TempDir(), "state.db")
	return func(ctx context.Context) (store.Store, error) {
		s, err := store.OpenSQLite(ctx, path)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, sqliteBackend)
}
