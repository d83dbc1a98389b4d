package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// The fleet of the fleet benchmarks: fleetPlans plans in one repository,
// fleetMoving of them migrating (soaking, then advancing one step of 2%
// after a soak of 10 to 50 minutes, all the way to 98%), the others at
// rest at their target once walked there.
const (
	fleetPlans  = 10_000
	fleetMoving = 1_000
)

// fleetPlan is the YAML of fleet plan i.
func fleetPlan(i int) string {
	name := fmt.Sprintf("fleet-%05d", i)
	steps, target, soak := "[5]", "5", "1h"
	if i < fleetMoving {
		var s []string
		for p := 2; p <= 98; p += 2 {
			s = append(s, strconv.Itoa(p))
		}
		steps, target, soak = "["+strings.Join(s, ", ")+"]", "98", fmt.Sprintf("%dm", 10+i%41)
	}
	return `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: ` + name + `
spec:
  target:
    phase: canary
    percentage: ` + target + `
  driver:
    docker:
      stable: {service: ` + name + `-v1}
      candidate: {service: ` + name + `-v2}
  phases:
    - name: canary
      steps: ` + steps + `
      soak: ` + soak + `
  guardrails:
    - name: errors
      prometheus: {query: 'sum(rate(errors_total{job="` + name + `"}[1m]))'}
      max: 0.05
      for: 5m
    - name: health
      http: {url: 'http://` + name + `-v2/health'}
      failures: 3
  rollback:
    to: previous-step
    onNoData: hold
`
}

// statusCounter is the plan repository, counting the status commits the
// daemon makes and the status files each carries.
type statusCounter struct {
	*gitops.Repo
	commits, files atomic.Int64
}

func (c *statusCounter) Commit(ctx context.Context, req gitops.CommitRequest) (gitops.Hash, error) {
	h, err := c.Repo.Commit(ctx, req)
	if err == nil && req.Trailers[gitops.TrailerAction] == "status" {
		changes, _ := req.Changes(nil)
		c.commits.Add(1)
		c.files.Add(int64(len(changes)))
	}
	return h, err
}

// fleetRig is a repository of the fleet served by `git daemon` on
// loopback, a person's clone of it, and the daemon's parts: SQLite store,
// fake driver, fake clock.
type fleetRig struct {
	url, work string
	tmp       string // outlives the sub-benchmarks, unlike theirs
	st        *store.SQL
	v         *plan.Validator
	clk       *clocktesting.FakeClock
	f         *fake.Fake
	advances  atomic.Int64
}

func newFleetRig(b *testing.B) *fleetRig {
	b.Helper()
	root := b.TempDir()
	src := filepath.Join(root, "src")
	if err := os.MkdirAll(filepath.Join(src, "plans"), 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range fleetPlans {
		if err := os.WriteFile(filepath.Join(src, "plans", fmt.Sprintf("fleet-%05d.yaml", i)), []byte(fleetPlan(i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	gittest.Git(b, src, "init", "-q", "-b", "main")
	gittest.Git(b, src, "add", "-A")
	gittest.Git(b, src, "commit", "-q", "-m", "a fleet of plans")
	gittest.Git(b, root, "clone", "-q", "--bare", src, filepath.Join(root, "plans.git"))
	// No gc in the background, still writing when the test removes it.
	gittest.Git(b, filepath.Join(root, "plans.git"), "config", "gc.auto", "0")
	gittest.Git(b, filepath.Join(root, "plans.git"), "config", "receive.autogc", "false")
	gittest.Git(b, src, "config", "gc.auto", "0")
	r := &fleetRig{url: gittest.Daemon(b, root) + "plans.git", work: src, tmp: b.TempDir()}
	gittest.Git(b, src, "remote", "add", "origin", filepath.Join(root, "plans.git"))
	ctx := context.Background()
	var err error
	if r.st, err = store.OpenSQLite(ctx, filepath.Join(root, "state.db")); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.st.Close() })
	if r.v, err = plan.NewValidator(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.v.Close)
	r.clk = clocktesting.NewFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	r.f = fake.New(fake.WithClock(r.clk))
	return r
}

// daemon returns a new daemon over the rig, as one starting would be.
func (r *fleetRig) daemon(b *testing.B) (*Daemon, *statusCounter) {
	b.Helper()
	repo, err := gitops.Open(context.Background(), gitops.Options{URL: r.url, Path: "plans", TempDir: r.tmp})
	if err != nil {
		b.Fatal(err)
	}
	g := &statusCounter{Repo: repo}
	runner := &reconcile.Runner{Store: r.st, Open: r.f.Opener(), Guards: &guards{readings: healthy()}, Clock: r.clk, Workers: 2,
		OnSaved: func(_ store.Record, events []store.Event) {
			for _, e := range events {
				if e.Kind == string(reconcile.Advance) {
					r.advances.Add(1)
				}
			}
		}}
	d := &Daemon{Git: g, Validator: r.v, Store: r.st, Plans: r.st, Clock: r.clk, Runner: runner,
		Log:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Poll: time.Hour, Interval: 30 * time.Second, StatusInterval: time.Minute,
		SyncTimeout: 10 * time.Minute, CommitTimeout: 10 * time.Minute,
		Author: gitops.Signature{Name: "hal9-migrate", Email: "bot@example.com"}}
	d.init()
	return d, g
}

// push commits a person's change of one plan file: its soak, 1h and 2h in
// turn.
func (r *fleetRig) push(b *testing.B, i int) {
	b.Helper()
	path := filepath.Join(r.work, "plans", fmt.Sprintf("fleet-%05d.yaml", i))
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	if strings.Contains(s, "soak: 1h") {
		s = strings.Replace(s, "soak: 1h", "soak: 2h", 1)
	} else {
		s = strings.Replace(s, "soak: 2h", "soak: 1h", 1)
	}
	gittest.Write(b, path, s)
	gittest.Git(b, r.work, "commit", "-q", "-am", "soak")
	gittest.Git(b, r.work, "pull", "-q", "--rebase", "origin", "main")
	gittest.PushRebasing(b, r.work)
}

// peakHeap samples the heap's objects (live and not yet collected) every
// 5 ms until stop is called, which returns the largest sample in MiB.
func peakHeap() (stop func() float64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() float64 {
		close(done)
		wg.Wait()
		return float64(peak) / (1 << 20)
	}
}

// liveHeapMB is the heap in use after a collection, in MiB.
func liveHeapMB() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// procMB reads a field of /proc/self/status (VmRSS, VmHWM) in MiB.
func procMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkFleet10000 measures the daemon over a repository of 10,000 plans
// (served by `git daemon` on loopback, SQLite store, fake driver), 1,000
// of them migrating:
//   - FirstSync: a daemon's first sync (fetch, validate every file, keep
//     every plan in the store), with the peak heap during it and the live
//     heap and resident size after;
//   - OneFileSync: a sync after a person changed one file, which parses
//     that one file again;
//   - IdleCycle: one cycle of the safety loop over the fleet with nothing
//     to do but soak, and what the Git loop's status check then costs with
//     nothing to commit;
//   - StatusStream: an hour on the fake clock, in steps of 10 s, of the
//     1,000 migrations advancing (each soak 10 to 50 minutes) with a
//     status check after each step as the Git loop makes it: status
//     commits per hour and transitions per commit.
//
// Each part runs once per iteration; `-benchtime 1x` bounds the whole to
// about two minutes on 2 cores.
func BenchmarkFleet10000(b *testing.B) {
	r := newFleetRig(b)
	ctx := context.Background()
	var d *Daemon
	var g *statusCounter

	b.Run("FirstSync", func(b *testing.B) {
		var took time.Duration
		var heapPeak float64
		for b.Loop() {
			d, g = r.daemon(b)
			runtime.GC()
			stop := peakHeap()
			start := time.Now()
			if err := d.sync(ctx); err != nil {
				b.Fatal(err)
			}
			took += time.Since(start)
			heapPeak = max(heapPeak, stop())
			if n := len(d.snapshot()); n != fleetPlans {
				b.Fatalf("%d plans followed, want %d", n, fleetPlans)
			}
		}
		b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/sync")
		b.ReportMetric(heapPeak, "MB-heap-peak")
		b.ReportMetric(liveHeapMB(), "MB-heap-live")
		b.ReportMetric(procMB("VmRSS"), "MB-rss")
		b.ReportMetric(procMB("VmHWM"), "MB-rss-peak")
	})

	b.Run("OneFileSync", func(b *testing.B) {
		var took time.Duration
		var heapPeak float64
		var parsed int64
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			r.push(b, fleetPlans-1-i%2)
			before := d.fleet.parsed().Checks()
			runtime.GC()
			b.StartTimer()
			stop := peakHeap()
			start := time.Now()
			if err := d.sync(ctx); err != nil {
				b.Fatal(err)
			}
			took += time.Since(start)
			heapPeak = max(heapPeak, stop())
			parsed += d.fleet.parsed().Checks() - before
		}
		b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/sync")
		b.ReportMetric(float64(parsed)/float64(b.N), "files-parsed/sync")
		b.ReportMetric(heapPeak, "MB-heap-peak")
	})

	// Walk the fleet to where it soaks: every plan leaves start, the
	// plans at rest reach their target, the moving ones their first step.
	for range 10 {
		busy := false
		for _, res := range d.Runner.Cycle(ctx, d.snapshot()) {
			if res.Err != nil {
				b.Fatal(res.Err)
			}
			busy = busy || res.Action.Kind != reconcile.Wait
		}
		if !busy {
			break
		}
	}
	start := time.Now()
	if err := d.commitStatus(ctx, true); err != nil {
		b.Fatal(err)
	}
	b.Logf("the first status commit, %d files: %s", g.files.Load(), time.Since(start))

	b.Run("IdleCycle", func(b *testing.B) {
		var cycle, check time.Duration
		commits := g.commits.Load()
		for b.Loop() {
			start := time.Now()
			d.cycle(ctx, nil, r.clk.Now())
			cycle += time.Since(start)
			start = time.Now()
			if err := d.commitStatus(ctx, false); err != nil {
				b.Fatal(err)
			}
			check += time.Since(start)
		}
		// What every check cost before it kept what it built: every
		// plan's record and history read, its status written out.
		d.mu.Lock()
		d.fleet.built = nil
		d.mu.Unlock()
		start := time.Now()
		if err := d.commitStatus(ctx, false); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/status-check-rebuilding-all")
		if n := g.commits.Load() - commits; n != 0 {
			b.Fatalf("%d status commits with nothing moving", n)
		}
		b.ReportMetric(float64(cycle.Milliseconds())/float64(b.N), "ms/cycle")
		b.ReportMetric(float64(check.Milliseconds())/float64(b.N), "ms/status-check")
		b.ReportMetric(liveHeapMB(), "MB-heap-live")
		b.ReportMetric(procMB("VmRSS"), "MB-rss")
	})

	b.Run("StatusStream", func(b *testing.B) {
		moving := map[string]bool{}
		for i := range fleetMoving {
			moving[fmt.Sprintf("fleet-%05d", i)] = true
		}
		var commits, files, advances int64
		var check time.Duration
		var checks int
		for b.Loop() {
			c0, f0, a0 := g.commits.Load(), g.files.Load(), r.advances.Load()
			for range 360 {
				r.clk.Step(10 * time.Second)
				d.cycle(ctx, moving, r.clk.Now())
				start := time.Now()
				if err := d.commitStatus(ctx, false); err != nil {
					b.Fatal(err)
				}
				check += time.Since(start)
				checks++
			}
			commits += g.commits.Load() - c0
			files += g.files.Load() - f0
			advances += r.advances.Load() - a0
		}
		b.ReportMetric(float64(commits)/float64(b.N), "commits/hour")
		b.ReportMetric(float64(advances)/float64(b.N), "advances/hour")
		b.ReportMetric(float64(files)/float64(max(commits, 1)), "files/commit")
		b.ReportMetric(float64(check.Milliseconds())/float64(checks), "ms/status-check")
	})
}
