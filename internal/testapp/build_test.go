package testapp

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBinaryLeavesNothing checks that Binary builds into the module's
// cache, leaves nothing in the temporary directory, and that the next
// process finds the same build rather than making another.
func TestBinaryLeavesNothing(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	bin := Binary(t)
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		t.Errorf("left in the temporary directory: %v", entries)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(bin, filepath.Join(root, ".cache", "testapp")+string(filepath.Separator)) {
		t.Errorf("built at %s, want under the module's .cache/testapp", bin)
	}
	info, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	// The next process: found, not built again.
	again, err := cached()
	if err != nil || again != bin {
		t.Fatalf("cached() = %s, %v; want %s", again, err, bin)
	}
	if info2, err := os.Stat(again); err != nil || !info2.ModTime().Equal(info.ModTime()) {
		t.Errorf("the build was made again")
	}
	if out, err := exec.Command(bin, "exit", "3").CombinedOutput(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("testapp exit 3: %v\n%s", err, out)
	}
}

// TestPrune checks that builds of other sources go once stale, and that
// the current one and fresh ones stay.
func TestPrune(t *testing.T) {
	cache := t.TempDir()
	old := time.Now().Add(-2 * staleAfter)
	for name, mtime := range map[string]time.Time{"current": old, "fresh": time.Now(), "stale": old, "build-1.tmp": old} {
		p := filepath.Join(cache, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	prune(cache, "current")
	var left []string
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "current fresh" {
		t.Errorf("left %v, want current and fresh", left)
	}
}
