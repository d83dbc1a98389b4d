package gitops

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// The peak memory of syncing a long-lived repository is measured in a
// child process, the test binary run again with memoryChildEnv set, that
// reads its own peak RSS (VmHWM in /proc/self/status): the parent test's
// other allocations (servers, fast-import buffers, earlier tests) would
// otherwise count.
const (
	memoryChildEnv = "HAL9_GITOPS_MEMORY_CHILD" // the mode: gitops or go-git-full
	memoryURLEnv   = "HAL9_GITOPS_MEMORY_URL"
	memoryTempEnv  = "HAL9_GITOPS_MEMORY_TEMP" // Options.TempDir of the child
	// memoryCompareEnv, set to 1, also measures a full go-git in-memory
	// clone for comparison (slow: it holds every object of the history).
	memoryCompareEnv = "HAL9_GITOPS_MEMORY_COMPARE"
	memoryCommits    = 20_000
	memoryLimitMB    = 40
	// memoryBigMB is the size of the file outside the plans of the
	// second repository: random bytes, which do not compress.
	memoryBigMB = 150
)

type memoryReport struct {
	Mode       string
	BaselineKB int64 // VmHWM before the work: the test binary at rest
	PeakKB     int64 // VmHWM after the work
	HeapSysKB  int64
	TotalAlloc int64
	Seconds    float64
}

func TestSyncPeakMemory(t *testing.T) {
	if mode := os.Getenv(memoryChildEnv); mode != "" {
		memoryChild(t, mode, os.Getenv(memoryURLEnv))
		return
	}
	if testing.Short() {
		t.Skip("-short: skipping the 20,000-commit memory measurement")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		testenv.Missing(t, "no /proc/self/status to read peak RSS from: %v", err)
	}
	needGit(t)
	base := t.TempDir()
	dir := bare(t, base, "r.git", nil)
	start := time.Now()
	fastImport(t, dir, memoryCommits)
	t.Logf("built %d commits with git fast-import in %v", memoryCommits, time.Since(start).Round(time.Millisecond))
	// The second repository: one plan, and a large file next to it.
	bigDir := bare(t, base, "big.git", nil)
	start = time.Now()
	bigFile(t, bigDir, memoryBigMB<<20)
	t.Logf("built a repository with a %d MB file outside the plans in %v", memoryBigMB, time.Since(start).Round(time.Millisecond))
	prefix := gitDaemon(t, base)
	url := prefix + "r.git"

	type memoryRun struct {
		what, mode, url string
		env             []string
		bounded         bool // held to memoryLimitMB
	}
	temp := memoryTempEnv + "=" + t.TempDir()
	runs := []memoryRun{
		{fmt.Sprintf("%d commits", memoryCommits), "gitops", url, []string{temp}, true},
		{fmt.Sprintf("a %d MB file outside the plans", memoryBigMB), "gitops", prefix + "big.git", []string{temp}, true},
		// No TempDir and no usable temporary directory, as in a FROM
		// scratch image: the pack is kept in memory, compressed.
		{fmt.Sprintf("a %d MB file outside the plans, no temporary directory", memoryBigMB), "gitops", prefix + "big.git",
			[]string{memoryTempEnv + "=", "TMPDIR=" + filepath.Join(base, "missing")}, false},
	}
	if os.Getenv(memoryCompareEnv) == "1" {
		runs = append(runs, memoryRun{fmt.Sprintf("%d commits", memoryCommits), "go-git-full", url, nil, false})
	}
	for _, r := range runs {
		rep := runMemoryChild(t, r.mode, r.url, r.env...)
		t.Logf("%s, %s: peak RSS %.1f MB (the test binary at rest: %.1f MB), Go heap reserved %.1f MB, allocated in total %.1f MB, %.2fs",
			r.mode, r.what, mb(rep.PeakKB), mb(rep.BaselineKB), mb(rep.HeapSysKB), float64(rep.TotalAlloc)/(1<<20), rep.Seconds)
		if r.bounded && rep.PeakKB > memoryLimitMB<<10 && !raceEnabled {
			t.Errorf("syncing and committing to a repository of %s peaked at %.1f MB RSS, want under %d MB", r.what, mb(rep.PeakKB), memoryLimitMB)
		}
	}

	// The git CLI, for scale, measured by GNU time: the peak RSS of the
	// git process and the children it waits for (index-pack). Not by
	// this process's rusage of its child: a child forked from a large
	// process counts the parent's pages until it execs.
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		t.Logf("no /usr/bin/time (Debian package time): not measuring the git CLI")
		return
	}
	for _, args := range [][]string{
		{"clone", "-q", "--bare", "--depth=1", "--single-branch", "--branch=main", url},
		{"clone", "-q", "--bare", "--single-branch", "--branch=main", url},
	} {
		dst := filepath.Join(t.TempDir(), "clone.git")
		cmd := exec.Command("/usr/bin/time", append([]string{"-f", "MAXRSS %M", "git"}, append(args, dst)...)...)
		cmd.Env = append(os.Environ(), gitEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		_, kb, _ := strings.Cut(string(out), "MAXRSS ")
		n, err := strconv.ParseInt(strings.TrimSpace(kb), 10, 64)
		if err != nil {
			t.Fatalf("git %s: no peak RSS in %q", strings.Join(args, " "), out)
		}
		t.Logf("git %s: peak RSS %.1f MB", strings.Join(args[:len(args)-1], " "), mb(n))
	}
}

func runMemoryChild(t *testing.T, mode, url string, env ...string) memoryReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSyncPeakMemory$", "-test.count=1", "-test.v")
	cmd.Env = append(append(os.Environ(), memoryChildEnv+"="+mode, memoryURLEnv+"="+url), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("memory child %s: %v\n%s", mode, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if js, ok := strings.CutPrefix(strings.TrimSpace(line), "MEMORY "); ok {
			var rep memoryReport
			if err := json.Unmarshal([]byte(js), &rep); err != nil {
				t.Fatalf("memory child %s: %v", mode, err)
			}
			return rep
		}
	}
	t.Fatalf("memory child %s printed no report:\n%s", mode, out)
	return memoryReport{}
}

// memoryChild does the work whose peak memory is measured and prints a
// report line.
func memoryChild(t *testing.T, mode, url string) {
	ctx := testContext(t, 10*time.Minute)
	baseline := vmHWM(t)
	start := time.Now()
	switch mode {
	case "gitops":
		r, err := Open(ctx, Options{URL: url, TempDir: os.Getenv(memoryTempEnv)})
		if err != nil {
			t.Fatal(err)
		}
		s, err := r.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Files) == 0 {
			t.Fatal("no plan files")
		}
		if _, err := r.Commit(ctx, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("memory child\n")}); err != nil {
			t.Fatal(err)
		}
	case "go-git-full":
		if _, err := git.CloneContext(ctx, memory.NewStorage(), nil, &git.CloneOptions{URL: url, SingleBranch: true, NoCheckout: true}); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown memory child mode %q", mode)
	}
	elapsed := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rep := memoryReport{
		Mode: mode, BaselineKB: baseline, PeakKB: vmHWM(t),
		HeapSysKB: int64(ms.HeapSys >> 10), TotalAlloc: int64(ms.TotalAlloc), Seconds: elapsed.Seconds(),
	}
	js, _ := json.Marshal(rep)
	fmt.Printf("MEMORY %s\n", js)
}

// bigFile fills the bare repository dir with one commit on main: a plan,
// and a file of size random bytes outside the plans.
func bigFile(tb testing.TB, dir string, size int) {
	tb.Helper()
	var b bytes.Buffer
	data := func(s []byte) { fmt.Fprintf(&b, "data %d\n", len(s)); b.Write(s); b.WriteString("\n") }
	b.WriteString("commit refs/heads/main\ncommitter Person <person@example.com> 1700000000 +0000\n")
	data([]byte("plans and a large file"))
	b.WriteString("M 100644 inline plans/hal9.yaml\n")
	data([]byte(planYAML("hal9", "canary", 10)))
	b.WriteString("M 100644 inline data/big.bin\n")
	big := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(big)
	data(big)
	b.WriteString("done\n")
	if out, err := tryGit(dir, b.Bytes(), "fast-import", "--quiet", "--done"); err != nil {
		tb.Fatalf("git fast-import: %v\n%s", err, out)
	}
}

// vmHWM returns the process's peak resident set size in KB.
func vmHWM(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func mb(kb int64) float64 { return float64(kb) / 1024 }
