package fake_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/fake"
)

// crashChildDir, when set, turns TestFileCrash into the child process that
// applies targets in a loop to the file fake in that directory.
const crashChildDir = "HAL9_FAKE_CRASH_CHILD_DIR"

const crashPlan = "crash"

// crashTarget is the target of the n-th change: the child applies them in
// order, so the parent knows what each change must be.
func crashTarget(n int64) drivers.Target {
	return drivers.Target{Traffic: int(n * 37 % 101), Mirror: int(n * 11 % 101), Decommission: n%7 == 0}
}

// TestFileCrash kills, at random moments, a process applying targets to a
// file fake, and checks after each kill that the state file holds a whole
// state, the one of the last change, and that the applies log is in order
// and at most the one change behind the state that the write order allows.
func TestFileCrash(t *testing.T) {
	if dir := os.Getenv(crashChildDir); dir != "" {
		crashChild(dir)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var prev int64
	behind := 0
	const rounds = 12
	for round := range rounds {
		cmd := exec.Command(exe, "-test.run=^TestFileCrash$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildDir+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready <- true
					return
				}
			}
			ready <- false
		}()
		select {
		case ok := <-ready:
			if !ok {
				cmd.Wait()
				t.Fatalf("round %d: child ended before applying: %s", round, stderr.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child not ready after 30s: %s", round, stderr.String())
		}
		time.Sleep(rand.N(25 * time.Millisecond))
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil {
			t.Fatalf("round %d: child exited cleanly before the kill: %s", round, stderr.String())
		}

		// What the killed process left, before any repair.
		last := checkCrashState(t, dir)
		if last < prev {
			t.Fatalf("round %d: state went back from change %d to %d", round, prev, last)
		}
		prev = last
		applies, err := fake.ReadApplies(dir, crashPlan)
		if err != nil {
			t.Fatalf("round %d: applies log unreadable after the kill: %v", round, err)
		}
		checkCrashLog(t, applies)
		logged := int64(len(applies))
		switch logged {
		case last:
		case last - 1:
			behind++
		default:
			t.Fatalf("round %d: the state is at change %d, the log at %d; want equal or one behind", round, last, logged)
		}

		// Reopening repairs the log and shows the state of the last change.
		f, err := fake.NewFile(dir)
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if s := f.Driver(crashPlan).State(); !s.Matches(crashTarget(last), 0) {
			t.Fatalf("round %d: reopened state %+v, want change %d: %+v", round, s, last, crashTarget(last))
		}
		applies, err = fake.ReadApplies(dir, crashPlan)
		if err != nil {
			t.Fatal(err)
		}
		checkCrashLog(t, applies)
		if int64(len(applies)) != last {
			t.Fatalf("round %d: after reopening the log has %d changes, want %d", round, len(applies), last)
		}
	}
	t.Logf("%d rounds, %d changes; the log was one behind the state after %d kills", rounds, prev, behind)
}

// checkCrashState reads the state file as the killed process left it: it must
// be whole, and show the target of the change it records as its last.
func checkCrashState(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := os.ReadFile(fake.StatePath(dir, crashPlan))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		State drivers.State `json:"state"`
		Last  *fake.Applied `json:"last"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("state file corrupt after the kill: %v\n%s", err, b)
	}
	if rec.Last == nil {
		t.Fatalf("state file records no change although the child applied one:\n%s", b)
	}
	want := crashTarget(rec.Last.Seq)
	if rec.Last.Target != want || !rec.State.Matches(want, 0) {
		t.Fatalf("state file is at change %d with target %+v and state %+v, want %+v", rec.Last.Seq, rec.Last.Target, rec.State, want)
	}
	return rec.Last.Seq
}

// checkCrashLog checks the log holds changes 1, 2, 3... in order, each the
// apply of its target.
func checkCrashLog(t *testing.T, applies []fake.Applied) {
	t.Helper()
	checkSeqs(t, applies)
	for _, a := range applies {
		if a.Op != fake.OpApply || a.Target != crashTarget(a.Seq) {
			t.Fatalf("change %d logged as %s %+v, want apply %+v", a.Seq, a.Op, a.Target, crashTarget(a.Seq))
		}
	}
}

// crashChild applies the next targets until it is killed, and says "ready"
// on stdout after the first. It gives up after a minute in case its parent
// died without killing it.
func crashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	f, err := fake.NewFile(dir)
	if err != nil {
		fail(err)
	}
	applies, err := fake.ReadApplies(dir, crashPlan)
	if err != nil {
		fail(err)
	}
	next := int64(len(applies)) + 1
	d := f.Driver(crashPlan)
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for first := true; time.Now().Before(deadline); first = false {
		if err := d.Apply(ctx, crashTarget(next)); err != nil {
			fail(err)
		}
		next++
		if first {
			fmt.Println("ready")
		}
	}
	fail(fmt.Errorf("not killed within a minute"))
}
