package docker

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// statsAt returns stats whose readings are a second apart, with used
// nanoseconds of CPU time between them and memory as given.
func statsAt(used uint64, online uint32, mem container.MemoryStats) container.StatsResponse {
	pre := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return container.StatsResponse{
		PreRead:     pre,
		Read:        pre.Add(time.Second),
		PreCPUStats: container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: 5e9}, OnlineCPUs: online},
		CPUStats:    container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: 5e9 + used}, OnlineCPUs: online},
		MemoryStats: mem,
	}
}

// TestUsageOf works out usage from stats answers: the CPU limit from
// NanoCPUs, the quota or the machine, the memory with and without the
// reclaimable cache of cgroup v1 and v2.
func TestUsageOf(t *testing.T) {
	const mib = 1 << 20
	v2 := container.MemoryStats{Usage: 50 * mib, Limit: 64 * mib, Stats: map[string]uint64{"inactive_file": 10 * mib}}
	for _, tc := range []struct {
		name      string
		stats     container.StatsResponse
		hc        *container.HostConfig
		cpu, mem  float64
		wantError bool
	}{
		{name: "0.4 of NanoCPUs 0.5", stats: statsAt(4e8, 2, v2), hc: &container.HostConfig{Resources: container.Resources{NanoCPUs: 5e8}}, cpu: 80, mem: 62.5},
		{name: "0.4 of a quota of half the period", stats: statsAt(4e8, 2, v2), hc: &container.HostConfig{Resources: container.Resources{CPUQuota: 50_000, CPUPeriod: 100_000}}, cpu: 80, mem: 62.5},
		{name: "a quota without a period: the kernel's 100ms", stats: statsAt(4e8, 2, v2), hc: &container.HostConfig{Resources: container.Resources{CPUQuota: 50_000}}, cpu: 80, mem: 62.5},
		{name: "no limit: the machine's 2 CPUs", stats: statsAt(4e8, 2, v2), hc: &container.HostConfig{}, cpu: 20, mem: 62.5},
		{name: "a limit above the machine: capped", stats: statsAt(4e8, 2, v2), hc: &container.HostConfig{Resources: container.Resources{NanoCPUs: 4e9}}, cpu: 20, mem: 62.5},
		{name: "no online CPUs: the per-CPU counters", stats: func() container.StatsResponse {
			s := statsAt(1e9, 0, v2)
			s.CPUStats.CPUUsage.PercpuUsage = []uint64{1, 2, 3, 4}
			return s
		}(), cpu: 25, mem: 62.5},
		{name: "a counter restarted between the readings", stats: func() container.StatsResponse {
			s := statsAt(0, 2, v2)
			s.CPUStats.CPUUsage.TotalUsage = 1e6
			return s
		}(), cpu: 0, mem: 62.5},
		{name: "cgroup v1: total_inactive_file", stats: statsAt(0, 2, container.MemoryStats{
			Usage: 50 * mib, Limit: 100 * mib, Stats: map[string]uint64{"total_inactive_file": 20 * mib, "inactive_file": 5 * mib},
		}), cpu: 0, mem: 30},
		{name: "a cache larger than the usage is not taken off", stats: statsAt(0, 2, container.MemoryStats{
			Usage: 10 * mib, Limit: 100 * mib, Stats: map[string]uint64{"inactive_file": 20 * mib},
		}), cpu: 0, mem: 10},
		{name: "no cache figure", stats: statsAt(0, 2, container.MemoryStats{Usage: 32 * mib, Limit: 64 * mib}), cpu: 0, mem: 50},
		{name: "no earlier reading", stats: func() container.StatsResponse {
			s := statsAt(4e8, 2, v2)
			s.PreRead = time.Time{}
			return s
		}(), wantError: true},
		{name: "readings out of order", stats: func() container.StatsResponse {
			s := statsAt(4e8, 2, v2)
			s.Read = s.PreRead
			return s
		}(), wantError: true},
		{name: "no memory limit", stats: statsAt(4e8, 2, container.MemoryStats{Usage: 1}), wantError: true},
		{name: "no CPUs at all", stats: statsAt(4e8, 0, v2), wantError: true},
		{name: "windows", stats: func() container.StatsResponse {
			s := statsAt(4e8, 2, v2)
			s.OSType = "windows"
			return s
		}(), wantError: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := usageOf(tc.stats, tc.hc)
			if tc.wantError {
				if err == nil {
					t.Errorf("usageOf = %+v, want an error", u)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(u.CPU-tc.cpu) > 1e-9 || math.Abs(u.Memory-tc.mem) > 1e-9 {
				t.Errorf("usageOf = CPU %g%% memory %g%%, want %g%% and %g%%", u.CPU, u.Memory, tc.cpu, tc.mem)
			}
		})
	}
}

// FuzzUsageOf feeds stats answers and limits to parseStats and usageOf:
// no panic, and every usage worked out is a finite, non-negative number.
func FuzzUsageOf(f *testing.F) {
	// An engine's answer on cgroup v1 and one on v2, cut down.
	f.Add([]byte(`{"read":"2025-01-01T00:00:01.5Z","preread":"2025-01-01T00:00:00.5Z",`+
		`"cpu_stats":{"cpu_usage":{"total_usage":900000000,"percpu_usage":[1,2]},"system_cpu_usage":1,"online_cpus":2},`+
		`"precpu_stats":{"cpu_usage":{"total_usage":500000000},"online_cpus":2},`+
		`"memory_stats":{"usage":52428800,"limit":67108864,"stats":{"total_inactive_file":1048576}}}`), int64(5e8), int64(0), int64(0))
	f.Add([]byte(`{"read":"2025-01-01T00:00:01Z","preread":"2025-01-01T00:00:00Z",`+
		`"cpu_stats":{"cpu_usage":{"total_usage":2},"online_cpus":1},"precpu_stats":{"cpu_usage":{"total_usage":1}},`+
		`"memory_stats":{"usage":10,"limit":20,"stats":{"inactive_file":30}}}`), int64(0), int64(50000), int64(-1))
	f.Add([]byte(`{}`), int64(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, answer []byte, nano, quota, period int64) {
		s, err := parseStats(answer)
		if err != nil {
			return
		}
		hc := &container.HostConfig{Resources: container.Resources{NanoCPUs: nano, CPUQuota: quota, CPUPeriod: period}}
		u, err := usageOf(s, hc)
		if err != nil {
			return
		}
		for _, v := range []float64{u.CPU, u.Memory} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("usageOf = %+v", u)
			}
		}
	})
}

// oneReading is an engine that answers stats with one reading, without the
// previous one an engine takes a second before.
type oneReading struct{ client.APIClient }

func (c oneReading) ContainerStats(ctx context.Context, id string, o client.ContainerStatsOptions) (client.ContainerStatsResult, error) {
	o.IncludePreviousSample = false
	return c.APIClient.ContainerStats(ctx, id, o)
}

// TestUsageOfOneContainer reads a burning container's usage from an engine
// that answers with one reading, so the driver takes two a second apart;
// then, the container listed while it ran, once it has stopped and once it
// is gone: errStopped, not an error.
//
// Not parallel: its burning container would take CPU from the tests that
// count requests (mirrored copies trail on a busy machine).
func TestUsageOfOneContainer(t *testing.T) {
	cli, labels := dockertest.Client(t), dockertest.Labels(t)
	name := dockertest.Name("usage")
	id := dockertest.Start(t, dockertest.Container{
		Name: name, Image: dockertest.TestAppImage(t), Cmd: []string{"serve"}, Env: []string{"CPU_MILLICORES=300"},
		Labels: labels, Resources: container.Resources{NanoCPUs: 5e8},
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	e, err := New(Options{Client: oneReading{cli}, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	p := &plan.Plan{Metadata: plan.Metadata{Name: dockertest.Name("plan")}}
	p.Spec.Driver.Docker = &plan.DockerDriver{Stable: plan.DockerWorkload{Container: name}, Candidate: plan.DockerWorkload{Container: dockertest.Name("none")}}
	opened, err := e.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	d := opened.(*Driver)
	w := &workload{sel: d.stable}
	if err := d.loadWorkload(ctx, w, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if len(w.running()) != 1 {
		t.Fatalf("stable runs %d containers, want 1", len(w.running()))
	}
	m := w.running()[0]

	from := time.Now()
	u, err := d.usage(ctx, m)
	t.Logf("from one reading at a time: %+v in %s", u, time.Since(from).Round(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if u.Instance != name || u.CPU <= 0 || u.Memory <= 0 || time.Since(from) < statsInterval {
		t.Errorf("the usage of a burning container from two readings of its own = %+v in %s, want CPU and memory above 0, after %s",
			u, time.Since(from), statsInterval)
	}

	secs := 0
	if _, err := cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		t.Fatal(err)
	}
	if u, err := d.usage(ctx, m); !errors.Is(err, errStopped) {
		t.Errorf("the usage of a stopped container = %+v, %v; want errStopped", u, err)
	}
	if _, err := cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if u, err := d.usage(ctx, m); !errors.Is(err, errStopped) {
		t.Errorf("the usage of a removed container = %+v, %v; want errStopped", u, err)
	}
}
