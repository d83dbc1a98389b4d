package testapp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// command is the testapp command's import path.
const command = "github.com/hal9ai/hal9-migrate/internal/testapp/cmd/testapp"

// staleAfter is how long a build of other sources is kept beside the
// current one: long enough for a test run that started before the sources
// changed to finish with it.
const staleAfter = time.Hour

var build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of the static testapp command, built into the
// module's .cache/testapp folder under a key of everything the build reads
// (the module's sources it compiles, go.mod and go.sum, the Go version and
// platform). Every test process of every package, in this run and the
// next, shares that one build, and nothing is left in the temporary
// directory; builds of older sources are removed an hour after they were
// last used.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = cached() })
	if build.err != nil {
		t.Fatalf("build testapp: %v", build.err)
	}
	return build.path
}

// cached returns the build for the current sources, building it first when
// there is none.
func cached() (string, error) {
	root, key, err := sourceKey()
	if err != nil {
		return "", err
	}
	cache := filepath.Join(root, ".cache", "testapp")
	dir := filepath.Join(cache, key)
	bin := filepath.Join(dir, "testapp")
	if _, err := os.Stat(bin); err == nil {
		now := time.Now()
		_ = os.Chtimes(dir, now, now) // in use: not stale
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Built beside and renamed into place, so that a test process never
	// runs a half-written binary, whichever of several parallel ones
	// builds it.
	tmp, err := os.CreateTemp(cache, "build-*.tmp")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp.Name(), command)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v\n%s", err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	prune(cache, key)
	return bin, nil
}

// sourceKey returns the module's root and a key of what the build of the
// command reads.
func sourceKey() (root, key string, err error) {
	out, err := goCommand("env", "GOMOD", "GOVERSION", "GOOS", "GOARCH")
	if err != nil {
		return "", "", err
	}
	env := strings.Split(strings.TrimSpace(out), "\n")
	if len(env) != 4 || env[0] == "" || env[0] == os.DevNull {
		return "", "", fmt.Errorf("go env: not inside the module: %q", out)
	}
	root = filepath.Dir(env[0])
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\nGOFLAGS=%s\nGOEXPERIMENT=%s\n", env[1], env[2], env[3], os.Getenv("GOFLAGS"), os.Getenv("GOEXPERIMENT"))
	// The module's own packages that the command compiles, file by file;
	// the others are fixed by go.sum.
	list, err := goCommand("list", "-deps", "-f", "{{if and .Module .Module.Main}}{{.Dir}}{{range .GoFiles}}\t{{.}}{{end}}{{range .EmbedFiles}}\t{{.}}{{end}}{{end}}", command)
	if err != nil {
		return "", "", err
	}
	files := []string{filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum")}
	for line := range strings.Lines(list) {
		fields := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if fields[0] == "" {
			continue
		}
		for _, f := range fields[1:] {
			files = append(files, filepath.Join(fields[0], f))
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil && !(errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(f, "go.sum")) {
			return "", "", err
		}
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(data))
		h.Write(data)
	}
	return root, hex.EncodeToString(h.Sum(nil))[:16], nil
}

func goCommand(args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// prune removes the builds of other sources, and the leftovers of builds
// that were stopped, once they are stale.
func prune(cache, keep string) {
	entries, err := os.ReadDir(cache)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() == keep {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleAfter {
			_ = os.RemoveAll(filepath.Join(cache, e.Name()))
		}
	}
}
