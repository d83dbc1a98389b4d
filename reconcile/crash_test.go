package reconcile

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/store"
)

// The crash test runs the engine in a child process (this test binary,
// re-executed) over a plan in a folder, with the SQLite store and the
// file-backed fake driver, and kills it with SIGKILL at random moments.
const (
	crashChildEnv  = "HAL9_RECONCILE_CRASH_CHILD"
	crashFinishEnv = "HAL9_RECONCILE_CRASH_FINISH"
)

const crashPlan = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: crash}
spec:
  target: {phase: full}
  driver: {docker: {stable: {service: old}, candidate: {service: new}, traffic: {nginx: {upstream: app}}}}
  phases:
    - name: shadow
      mirror: 50
      soak: 1500ms
    - name: canary
      steps: [10, 30, 60]
      soak: 1200ms
      checkpoint: pre-canary
    - name: migrate
      run: {image: migrator, env: {FAKE_JOB_DURATION: 2s}, timeout: 1m}
      verify: [integrity]
      irreversible: true
    - name: full
      steps: [100]
      decommission: {after: 1s}
  verify:
    integrity: {run: {image: migrator, env: {FAKE_JOB_DURATION: 1s}}}
  features: {new_path: 20}
`

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir, os.Getenv(crashFinishEnv) != ""))
	}
	os.Exit(m.Run())
}

// crashChild reconciles the plan in dir/plans every 20ms, for ever or, when
// finish is set, until the migration is complete.
func crashChild(dir string, finish bool) int {
	ctx := context.Background()
	r, p, err := crashEngine(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	desired := []*Desired{NewDesired(p, "c1")}
	// Tell the parent the engine is open: it kills at random times after
	// this, so that a slow start on a loaded machine does not eat every
	// life before its first cycle.
	fmt.Println("ready")
	for {
		for _, res := range r.Cycle(ctx, desired) {
			if res.Err != nil {
				fmt.Fprintln(os.Stderr, res.Err)
			}
			if finish && res.Action.Kind == Wait && res.Action.Status == StatusCompleted {
				return 0
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crashEngine opens what the child runs: the plan in dir/plans, the SQLite
// store and the file-backed fake driver.
func crashEngine(ctx context.Context, dir string) (*Runner, *plan.Plan, error) {
	v, err := plan.NewValidator()
	if err != nil {
		return nil, nil, err
	}
	set, err := v.Load(filepath.Join(dir, "plans"))
	if err != nil {
		return nil, nil, err
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		return nil, nil, err
	}
	f, err := fake.NewFile(filepath.Join(dir, "driver"))
	if err != nil {
		return nil, nil, err
	}
	return &Runner{Store: st, Open: f.Opener(), Clock: clock.RealClock{}, Workers: 2}, set.Plans[0], nil
}

func TestCrashAnywhere(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "plans"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plans", "crash.yaml"), []byte(crashPlan), 0o644); err != nil {
		t.Fatal(err)
	}
	child := func(finish bool) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		if finish {
			cmd.Env = append(cmd.Env, crashFinishEnv+"=1")
		}
		cmd.Stderr = os.Stderr
		return cmd
	}

	// Kill the engine at random moments (in the middle of a soak, a job, a
	// save or an apply) until the plan is complete, and at least 50 times.
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	killedAt := map[string]int{}
	kills := 0
	for complete := false; kills < 50 || !complete; kills++ {
		if kills == 400 {
			t.Fatalf("the plan did not complete in %d lives of the engine: %v", kills, killedAt)
		}
		cmd := child(false)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			if line == "ready\n" {
				close(ready)
			}
			_, _ = io.Copy(io.Discard, stdout)
		}()
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("the engine did not open within 30s")
		}
		// Most lives end within 250ms, in the middle of anything; some
		// outlive a soak, since a restarted engine soaks the step again.
		life := time.Duration(r.IntN(250)) * time.Millisecond
		if r.IntN(10) < 3 {
			life = 1500*time.Millisecond + time.Duration(r.IntN(1000))*time.Millisecond
		}
		time.Sleep(life)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", kills, err)
		}
		_ = cmd.Wait()
		rec := recordIn(t, dir)
		complete = rec.Decommissioned
		where := rec.Position.String()
		if rec.Pending != nil {
			where += " → " + rec.Pending.String()
		}
		killedAt[where]++
	}
	t.Logf("%d kills, by position: %v", kills, killedAt)
	if len(killedAt) < 4 {
		t.Errorf("the kills fell on only %d positions: %v", len(killedAt), killedAt)
	}
	// Then let it finish.
	cmd := child(true)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the engine did not finish cleanly: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the engine did not complete the plan within 60s after the crashes")
	}

	checkCrashOutcome(t, dir, kills)
}

// recordIn reads the record the killed engine left; a zero record when it
// died before creating the store.
func recordIn(t *testing.T, dir string) store.Record {
	if _, err := os.Stat(filepath.Join(dir, "state.db")); err != nil {
		return store.Record{}
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.Load(context.Background(), "crash")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func checkCrashOutcome(t *testing.T, dir string, kills int) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, _ := plan.NewValidator()
	set, err := v.Load(filepath.Join(dir, "plans"))
	if err != nil {
		t.Fatal(err)
	}
	p := set.Plans[0]
	timeline := p.Timeline(plan.Last)

	// It converged.
	rec, err := st.Load(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Position != (plan.Position{Phase: "full", Percentage: 100}) || !rec.Decommissioned || rec.Pending != nil {
		t.Fatalf("final record: %+v", rec)
	}

	// The history is complete and in order: every step was entered once,
	// in the plan's order, each after an Advance decided once the previous
	// step had soaked.
	history, err := st.History(ctx, "crash", 0)
	if err != nil {
		t.Fatal(err)
	}
	var entered []store.Event
	advances := map[plan.Position]store.Event{} // by From
	kinds := map[string]int{}
	for _, e := range history {
		kinds[e.Kind]++
		switch e.Kind {
		case "Entered":
			entered = append(entered, e)
		case string(Advance):
			if _, dup := advances[e.From]; dup {
				t.Errorf("advanced from %s twice", e.From)
			}
			advances[e.From] = e
		case string(Rollback), string(MoveBack), string(Freeze):
			t.Errorf("unexpected %s: %s", e.Kind, e.Reason)
		}
	}
	if len(entered) != len(timeline) {
		for _, e := range history {
			t.Logf("%d %s %s → %s: %s", e.Seq, e.Kind, e.From, e.To, e.Reason)
		}
		t.Fatalf("entered %d positions, the plan has %d steps", len(entered), len(timeline))
	}
	for i, e := range entered {
		if e.To != timeline[i].Position {
			t.Errorf("entered #%d: %s, want %s", i, e.To, timeline[i].Position)
		}
		if i+1 == len(entered) {
			break
		}
		adv, ok := advances[e.To]
		if !ok {
			t.Errorf("no Advance event from %s", e.To)
			continue
		}
		if soak := timeline[i].Soak.Std(); adv.At.Sub(e.At) < soak {
			t.Errorf("left %s after %v, soak %v", e.To, adv.At.Sub(e.At), soak)
		}
	}
	for _, k := range []string{string(Checkpoint), string(StartJob), string(RunChecks), string(Decommission), string(PublishFlags)} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the history: %v", k, kinds)
		}
	}

	// The driver saw the steps applied in order: collapsing repeats (an
	// apply repeated after a crash), its applies are the plan's positions.
	applies, err := fake.ReadApplies(filepath.Join(dir, "driver"), "crash")
	if err != nil {
		t.Fatal(err)
	}
	var seen []drivers.Target
	for _, a := range applies {
		if len(seen) == 0 || seen[len(seen)-1] != a.Target {
			seen = append(seen, a.Target)
		}
	}
	var want []drivers.Target
	for _, s := range timeline {
		tg := drivers.Target{Traffic: s.Percentage, Mirror: s.Mirror}
		if len(want) == 0 || want[len(want)-1] != tg {
			want = append(want, tg)
		}
	}
	want = append(want, drivers.Target{Traffic: 100, Decommission: true})
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("applies out of order:\n got %v\nwant %v", seen, want)
	}
	t.Logf("%d events, %d applies (%d distinct) over %d kills", len(history), len(applies), len(seen), kills)
}
