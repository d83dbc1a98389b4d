package docker_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// TestUsage runs a stable and a candidate limited to half a CPU and 64 MiB
// each, the candidate told to burn 0.4 CPU and hold 40 MiB, beside a
// stopped candidate container, and reads each side's usage: the candidate's
// CPU as its own account of its CPU time says (80% when the machine lets it
// burn all it asks), its memory near 70% (what it holds and the Go
// runtime), stable idle, the stopped container left out.
//
// Not parallel: its burning container would take CPU from the tests that
// count requests (mirrored copies trail on a busy machine).
func TestUsage(t *testing.T) {
	cli, labels, image := dockertest.Client(t), dockertest.Labels(t), dockertest.TestAppImage(t)
	base := dockertest.Name("usage")
	const cpus = 0.5
	limits := container.Resources{NanoCPUs: int64(cpus * 1e9), Memory: 64 << 20}
	start := func(name, version string) string {
		return dockertest.Start(t, dockertest.Container{
			Name: name, Image: image, Cmd: []string{"serve", "-version", version},
			Labels: labels, Publish: []string{"8080"}, Resources: limits,
		})
	}
	var candID string
	both(func() { start(base, "stable") }, func() { candID = start(base+"-v2", "candidate") })
	stoppedID := start(base+"-v2-stopped", "candidate")
	secs := 0
	if _, err := cli.ContainerStop(ctxFor(t), stoppedID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		t.Fatal(err)
	}
	d := openPlan(t, &rig{cli: cli, labels: labels}, plan.DockerWorkload{Container: base}, plan.DockerWorkload{Container: base + "-v2"})

	addr := dockertest.HostAddr(t, candID, "8080")
	control(t, addr, url.Values{"cpuMillicores": {"400"}, "holdBytes": {strconv.Itoa(40 << 20)}})

	// The container gets the CPU the machine can spare: on a busy one the
	// burner gets less than it asks. So the reading is checked against the
	// process's own CPU time over an interval around it, a few times,
	// until the two agree within a quarter.
	var cand []drivers.Usage
	var own float64
	err := drivertest.WaitFor(ctxFor(t), 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		before, from := processCPU(t, addr), time.Now()
		var err error
		if cand, err = d.Usage(ctx, plan.Candidate); err != nil {
			return false, err
		}
		own = 100 * (processCPU(t, addr) - before) / time.Since(from).Seconds() / cpus
		t.Logf("candidate: %+v; by its own account %.1f%%", cand, own)
		return len(cand) == 1 && own >= 10 && math.Abs(cand[0].CPU-own) <= own/4, nil
	})
	if err != nil {
		t.Errorf("the candidate's CPU never agreed with its own account: %v; last %+v against %.1f%%", err, cand, own)
	}
	if len(cand) != 1 || cand[0].Instance != base+"-v2" {
		t.Fatalf("the candidate's usage = %+v, want one of %s (the stopped container left out)", cand, base+"-v2")
	}
	if m := cand[0].Memory; m < 50 || m > 80 {
		t.Errorf("the candidate holding 40 of 64 MiB uses %.1f%% of its memory, want 50..80%%", m)
	}

	stable, err := d.Usage(ctxFor(t), plan.Stable)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stable: %+v", stable)
	if len(stable) != 1 || stable[0].Instance != base || stable[0].CPU > 10 || stable[0].Memory > 25 {
		t.Errorf("idle stable = %+v, want one container %s at CPU under 10%% and memory under 25%%", stable, base)
	}

	t.Run("no containers", func(t *testing.T) {
		d := openPlan(t, &rig{cli: cli, labels: labels}, plan.DockerWorkload{Container: base}, plan.DockerWorkload{Container: dockertest.Name("none")})
		us, err := d.Usage(ctxFor(t), plan.Candidate)
		if err != nil || len(us) != 0 {
			t.Errorf("a side without containers = %+v, %v; want none, no error", us, err)
		}
	})

	t.Run("unknown side", func(t *testing.T) {
		if _, err := d.Usage(ctxFor(t), plan.Side("canary")); err == nil {
			t.Error("the usage of side canary: no error")
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := d.Usage(ctx, plan.Candidate); !errors.Is(err, context.Canceled) {
			t.Errorf("with a cancelled ctx: %v, want context.Canceled", err)
		}
	})

	t.Run("deadline while the engine reads", func(t *testing.T) {
		// The engine answers after a second, between its two readings.
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := d.Usage(ctx, plan.Candidate)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("with a ctx ending before the engine answers: %v, want context.DeadlineExceeded", err)
		}
		t.Log(err)
	})
}

// processCPU is the CPU time, in seconds, the testapp at addr says its
// process has used.
func processCPU(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "process_cpu_seconds_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s/metrics has no process_cpu_seconds_total", addr)
	return 0
}
