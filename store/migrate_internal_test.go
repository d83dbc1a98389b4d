package store

import "testing"

// TestMigrationsNumbered guards migrate, which finds the missing steps by
// position: step i must be version i+1.
func TestMigrationsNumbered(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 {
			t.Errorf("migrations[%d] is version %d, want %d", i, m.version, i+1)
		}
		if m.name == "" {
			t.Errorf("migration %d has no name", m.version)
		}
	}
}
