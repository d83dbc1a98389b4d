package testapp

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var build struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// Binary builds the static testapp command once per test process and returns
// its path. The binary lives in a temporary folder removed when the process
// exits normally; each package's test binary builds its own (the build cache
// makes the second build fast).
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "hal9-testapp-")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "testapp")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", build.path, "github.com/hal9ai/hal9-migrate/internal/testapp/cmd/testapp")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.out, build.err = cmd.CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("build testapp: %v\n%s", build.err, build.out)
	}
	return build.path
}
