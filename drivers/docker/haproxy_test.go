package docker_test

import (
	"math"
	"strconv"
	"testing"

	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers/docker"
	"github.com/hal9ai/hal9-migrate/drivers/traffic"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
)

// TestHAProxySplit routes a stable and a candidate container through a real
// HAProxy on the host, checks the split real requests see against the one
// read back, and that HAProxy was never reloaded: the same process, its
// uptime only grown. A candidate container that goes shows as drift, and
// the next Route takes its server out.
func TestHAProxySplit(t *testing.T) {
	r := newRig(t, setup{})
	backend := "app_" + r.plan.Metadata.Name
	h := dockertest.StartHostHAProxy(t, backend)
	ctx := ctxFor(t)
	before := h.Info(t)

	for _, api := range []string{h.Socket, h.TCP} {
		eng, err := docker.New(docker.Options{Client: r.cli, Labels: r.labels, HAProxyRuntimeAPI: api})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Close() })
		d, err := eng.Open(ctx, r.plan)
		if err != nil {
			t.Fatal(err)
		}
		drv := d.(*docker.Driver)
		for _, percent := range []int{0, 25, 100, 25} {
			if err := docker.RouteHAProxy(ctx, drv, backend, traffic.Split{Traffic: percent}); err != nil {
				t.Fatalf("route %d%% through %s: %v", percent, api, err)
			}
			got, err := docker.ObserveHAProxy(ctx, drv, backend)
			if err != nil || got != (traffic.Split{Traffic: percent}) {
				t.Fatalf("observe after routing %d%% through %s: %v, %v", percent, api, got, err)
			}
			const n = 400
			res := send(t, h.Addr, "/", n)
			share := res.share("candidate")
			t.Logf("%d%% through %s: the candidate answered %.1f%% of %d requests (%d failed)", percent, api, share, n, res.failed)
			// HAProxy's weighted round robin is exact over each cycle.
			if res.failed > 0 || math.Abs(share-float64(percent)) > 3 {
				t.Errorf("%d%%: the candidate answered %.1f%%, %d failed (%s)", percent, share, res.failed, res.firstErr)
			}
		}
		err = docker.RouteHAProxy(ctx, drv, backend, traffic.Split{Traffic: 10, Mirror: 10})
		if err == nil {
			t.Error("a mirrored share: want ErrCannotMirror")
		}
	}

	// The candidate's container goes: its server takes nothing, and the
	// split shows off its target until stable takes it all.
	eng, err := docker.New(docker.Options{Client: r.cli, Labels: r.labels, HAProxyRuntimeAPI: h.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	d, err := eng.Open(ctx, r.plan)
	if err != nil {
		t.Fatal(err)
	}
	drv := d.(*docker.Driver)
	if _, err := r.cli.ContainerStop(ctx, r.candidate, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := docker.ObserveHAProxy(ctx, drv, backend); err != nil || got.Traffic != 0 {
		t.Errorf("the candidate stopped: observed %v, %v; want 0%%", got, err)
	}
	if err := docker.RouteHAProxy(ctx, drv, backend, traffic.Split{Traffic: 25}); err == nil {
		t.Error("25% with no candidate running: want an error")
	}
	if err := docker.RouteHAProxy(ctx, drv, backend, traffic.Split{}); err != nil {
		t.Fatal(err)
	}
	if res := send(t, h.Addr, "/", 50); res.failed > 0 || res.byVersion["stable"] != 50 {
		t.Errorf("all to stable: %+v", res)
	}

	after := h.Info(t)
	if before["Pid"] != strconv.Itoa(h.PID()) || after["Pid"] != before["Pid"] {
		t.Errorf("HAProxy's pid went from %s to %s (process %d): reloaded", before["Pid"], after["Pid"], h.PID())
	}
	up0, _ := strconv.Atoi(before["Uptime_sec"])
	up1, _ := strconv.Atoi(after["Uptime_sec"])
	if up1 < up0 {
		t.Errorf("HAProxy's uptime went from %ds to %ds: restarted", up0, up1)
	}
}
