package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/tracing"
)

// live is a daemon over a git daemon on loopback with the SQLite store and
// the fake driver, on a fake clock, serving its API.
type live struct {
	url    string // the API
	remote string // the bare plan repository
	store  store.Store
	d      *daemon.Daemon
	clock  *clocktesting.FakeClock
}

// liveDaemon starts a daemon, with API token token, and steps it until the
// base plan holds at canary 10%.
func liveDaemon(t *testing.T, token string) *live {
	t.Helper()
	return liveDaemonOf(t, token, basePlan(t))
}

// basePlan returns plan/testdata/base.yaml, the plan liveDaemon follows.
func basePlan(t *testing.T) string {
	t.Helper()
	base, err := os.ReadFile("../../plan/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(base)
}

// liveDaemonOf is liveDaemon following base, a variant of the base plan.
func liveDaemonOf(t *testing.T, token, base string) *live {
	t.Helper()
	root := t.TempDir()
	remote := gittest.Bare(t, root, "plans", map[string]string{"plans/shop.yaml": base})
	url := gittest.Daemon(t, root) + "plans.git"
	ctx := context.Background()
	clk := clocktesting.NewFakeClock(time.Now())
	repo, err := gitops.Open(ctx, gitops.Options{URL: url, Branch: "main", Path: "plans", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	f := fake.New(fake.WithClock(clk))
	tp, err := tracing.New(ctx, tracing.OTLPConfig{}, tracing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon.Daemon{Git: repo, Validator: v, Store: st, Clock: clk,
		Author: gitops.Signature{Name: "hal9-migrate", Email: "hal9-migrate@example.com"},
		Runner: &reconcile.Runner{Store: st, Open: f.Opener(), Clock: clk, Workers: 1},
		Tracer: tp, Traces: tp.Ring}
	l := &live{remote: remote, store: st, d: d, clock: clk}
	l.until(t, func(rec store.Record) bool {
		return rec.Position == (plan.Position{Phase: "canary", Percentage: 10}) && rec.Status == reconcile.StatusHolding
	})
	srv := httptest.NewServer(d.Handler(daemon.HTTPOptions{APIToken: token}))
	t.Cleanup(srv.Close)
	l.url = srv.URL
	return l
}

// until steps the daemon, 15 minutes apart, until done holds of the base
// plan's record.
func (l *live) until(t *testing.T, done func(store.Record) bool) store.Record {
	t.Helper()
	ctx := context.Background()
	for i := 0; ; i++ {
		if err := l.d.Step(ctx); err != nil {
			t.Fatal(err)
		}
		rec, _ := l.store.Load(ctx, "base")
		if done(rec) {
			return rec
		}
		if i == 200 {
			t.Fatalf("not done after 200 steps: %+v", rec)
		}
		l.clock.Step(15 * time.Minute)
	}
}

func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hal9-migrate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestMonitor runs monitor, built once, against a live daemon.
func TestMonitor(t *testing.T) {
	url := liveDaemon(t, "").url
	bin := buildCLI(t)
	t.Run("terminal", func(t *testing.T) { monitorInATerminal(t, url, bin) })
	t.Run("once", func(t *testing.T) { monitorOnce(t, url, bin) })
}

// syncBuffer collects a pseudo-terminal's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// monitorInATerminal drives monitor in a pseudo-terminal: it draws the
// migration and its history on the alternate screen, redraws, and leaves
// on q, restoring the screen.
func monitorInATerminal(t *testing.T, url, bin string) {
	cmd := exec.Command(bin, "monitor", "--daemon", url, "--interval", "0.2")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out syncBuffer
	go func() { _, _ = io.Copy(&out, ptmx) }()

	deadline := time.Now().Add(20 * time.Second)
	for !(strings.Count(out.String(), "hal9-migrate monitor") >= 2) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no two frames within 20s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	screen := out.String()
	for _, want := range []string{"\033[?1049h", " · every 200ms · q quits\r\n", "base  canary 10% → canary 10%  [Holding]", "next: Wait — holding at the target",
		"traffic 10%  mirror 0%", "recent history:", "Advance", "\r\n"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the screen lacks %q:\n%s", want, screen)
		}
	}
	if _, err := ptmx.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("monitor exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("monitor did not leave on q")
	}
	time.Sleep(100 * time.Millisecond)
	if !strings.HasSuffix(strings.TrimRight(out.String(), "\r\n"), "\033[?25h\033[?1049l") {
		t.Errorf("the screen was not restored: %q", tail(out.String(), 80))
	}
}

// monitorOnce prints one frame of the logs dashboard, one of the traces
// dashboard from the daemon's ring, and says when the daemon cannot be
// reached.
func monitorOnce(t *testing.T, url, bin string) {
	out, err := exec.Command(bin, "monitor", "--daemon", url, "--once", "--dashboard", "logs").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "recent history:") || strings.Contains(s, "[Holding]") || strings.Contains(s, "\033[") {
		t.Errorf("logs dashboard:\n%s", s)
	}
	// One frame, not interactive: nothing is redrawn, q is not read.
	if first, _, _ := strings.Cut(s, "\n"); strings.Contains(first, "q quits") || strings.Contains(first, "every") || !strings.HasPrefix(first, "hal9-migrate monitor · "+url+" · ") {
		t.Errorf("heading of a single frame: %q", first)
	}
	out, err = exec.Command(bin, "monitor", "--daemon", url, "--once", "--dashboard", "traces", "--plan", "base").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	s = string(out)
	for _, want := range []string{"hal9-migrate monitor · traces · ", "safety.cycle", "\n    step ", "\n      decide ", "\n      apply ", "base Wait", "█", "trace "} {
		if !strings.Contains(s, want) {
			t.Errorf("the traces dashboard lacks %q:\n%s", want, s)
		}
	}
	out, err = exec.Command(bin, "monitor", "--daemon", "http://127.0.0.1:1", "--once").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot reach the daemon") {
		t.Errorf("no daemon: %v\n%s", err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
