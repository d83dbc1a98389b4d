package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

var _ drivers.UsageReader = (*Driver)(nil)

// Limits on reading a container's stats.
const (
	// statsTimeout bounds the stats of one container: the engine answers
	// after about a second, the time between its two readings.
	statsTimeout = 5 * time.Second
	// statsMaxAnswer bounds one stats answer, a few kilobytes with
	// per-CPU counters of a large machine.
	statsMaxAnswer = 1 << 20
	// statsInterval is how long the driver waits between two readings of
	// its own, when the engine answers without a previous one.
	statsInterval = time.Second
)

// Usage reads the stats of side's running containers, all at once, and
// returns the CPU each used per second between two readings a second apart
// and the memory it uses now, in percent of its limits. A container that
// stops meanwhile is left out.
func (d *Driver) Usage(ctx context.Context, side plan.Side) ([]drivers.Usage, error) {
	fail := func(err error) ([]drivers.Usage, error) {
		return nil, fmt.Errorf("read the usage of %s's %s: %w", d.plan, side, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	var sel selector
	switch side {
	case plan.Stable:
		sel = d.stable
	case plan.Candidate:
		sel = d.cand
	default:
		return fail(fmt.Errorf("no side %q", side))
	}
	w := &workload{sel: sel}
	if err := d.loadWorkload(ctx, w, map[string]bool{}); err != nil {
		return fail(err)
	}
	running := w.running()
	found := make([]bool, len(running))
	usages := make([]drivers.Usage, len(running))
	errs := make([]error, len(running))
	var wg sync.WaitGroup
	for i, m := range running {
		wg.Go(func() {
			u, err := d.usage(ctx, m)
			switch {
			case err == nil:
				usages[i], found[i] = u, true
			case errors.Is(err, errStopped):
				d.opts.Log.Debug("left a stopped container out of the usage", "plan", d.plan, "workload", sel.role, "container", m.name)
			default:
				errs[i] = err
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	out := []drivers.Usage{}
	for i, u := range usages {
		if found[i] {
			out = append(out, u)
		}
	}
	return out, nil
}

// errStopped is what usage returns for a container that no longer runs.
var errStopped = errors.New("the container stopped")

// usage reads m's stats within statsTimeout: the engine's answer with its
// previous reading, or two readings statsInterval apart when it has none.
func (d *Driver) usage(ctx context.Context, m member) (drivers.Usage, error) {
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	s, err := d.stats(ctx, m, true)
	if err != nil {
		return drivers.Usage{}, err
	}
	if s.PreRead.IsZero() || s.PreCPUStats.CPUUsage.TotalUsage == 0 {
		wait := time.NewTimer(statsInterval)
		select {
		case <-ctx.Done():
			wait.Stop()
			return drivers.Usage{}, fmt.Errorf("read the stats of container %s: %w", m.name, ctx.Err())
		case <-wait.C:
		}
		next, err := d.stats(ctx, m, false)
		if err != nil {
			return drivers.Usage{}, err
		}
		next.PreRead, next.PreCPUStats = s.Read, s.CPUStats
		s = next
	}
	u, err := usageOf(s, m.info.HostConfig)
	if err != nil {
		return drivers.Usage{}, fmt.Errorf("container %s: %w", m.name, err)
	}
	u.Instance = m.name
	return u, nil
}

// stats reads one stats answer of m, with the engine's previous reading
// when previous is set. A container that is gone or not running, which
// the engine answers with empty stats, is errStopped.
func (d *Driver) stats(ctx context.Context, m member, previous bool) (container.StatsResponse, error) {
	s, err := d.readStats(ctx, m, previous)
	if err == nil && !s.Read.IsZero() {
		return s, nil
	}
	if err != nil && ctx.Err() != nil {
		if !errors.Is(err, ctx.Err()) {
			// A body closed under the read says only that.
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return s, fmt.Errorf("read the stats of container %s: %w", m.name, err)
	}
	// An answer cut short or missing may be the container stopping while
	// the engine read it: it is an error only if the container still runs.
	if err != nil && !cerrdefs.IsNotFound(err) && d.runs(ctx, m) {
		return s, fmt.Errorf("read the stats of container %s: %w", m.name, err)
	}
	return s, errStopped
}

// runs reports whether m still runs, or may: an engine that cannot say is
// taken for yes.
func (d *Driver) runs(ctx context.Context, m member) bool {
	res, err := d.cli.ContainerInspect(ctx, m.id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false
	}
	return err != nil || res.Container.State == nil || res.Container.State.Running
}

func (d *Driver) readStats(ctx context.Context, m member, previous bool) (container.StatsResponse, error) {
	res, err := d.cli.ContainerStats(ctx, m.id, client.ContainerStatsOptions{IncludePreviousSample: previous})
	if err != nil {
		return container.StatsResponse{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, statsMaxAnswer+1))
	if err != nil {
		return container.StatsResponse{}, err
	}
	return parseStats(b)
}

// parseStats decodes one stats answer of at most statsMaxAnswer bytes.
func parseStats(b []byte) (container.StatsResponse, error) {
	var s container.StatsResponse
	if len(b) > statsMaxAnswer {
		return s, fmt.Errorf("the stats answer is over %d bytes", statsMaxAnswer)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("decode the stats answer: %w", err)
	}
	return s, nil
}

// usageOf works out a container's usage from its stats and its limits.
//
// CPU is the CPU time used between the previous reading and this one,
// divided by the time between them, in percent of the CPUs the container
// may use: its NanoCPUs, else its CFS quota over its period, else the
// machine's online CPUs, and never more than those. A container limited
// to 0.5 CPU that used 0.4 s of CPU time in a second is at 80%.
//
// Memory is the usage less the page cache the kernel can reclaim, as
// `docker stats` shows it (total_inactive_file on cgroup v1,
// inactive_file on v2), in percent of the limit the engine reports, which
// is the machine's memory for a container without one.
func usageOf(s container.StatsResponse, hc *container.HostConfig) (drivers.Usage, error) {
	if s.OSType == "windows" {
		return drivers.Usage{}, errors.New("the usage of Windows containers is not read")
	}
	elapsed := s.Read.Sub(s.PreRead)
	if s.PreRead.IsZero() || elapsed <= 0 {
		return drivers.Usage{}, fmt.Errorf("the stats have no earlier reading to compare with (read %s, previous %s)",
			s.Read.Format(time.RFC3339Nano), s.PreRead.Format(time.RFC3339Nano))
	}
	cpus := cpuLimit(s.CPUStats, hc)
	if cpus <= 0 {
		return drivers.Usage{}, errors.New("the stats report no online CPUs")
	}
	var used uint64
	if now, before := s.CPUStats.CPUUsage.TotalUsage, s.PreCPUStats.CPUUsage.TotalUsage; now > before {
		used = now - before // a restart between the readings starts again from 0
	}
	mem := s.MemoryStats
	if mem.Limit == 0 {
		return drivers.Usage{}, errors.New("the stats report no memory limit")
	}
	cache := "inactive_file"
	if _, v1 := mem.Stats["total_inactive_file"]; v1 {
		cache = "total_inactive_file"
	}
	inUse := mem.Usage
	if c := mem.Stats[cache]; c < inUse {
		inUse -= c
	}
	return drivers.Usage{
		CPU:    100 * float64(used) / float64(elapsed.Nanoseconds()) / cpus,
		Memory: 100 * float64(inUse) / float64(mem.Limit),
	}, nil
}

// cpuLimit is how many CPUs a container may use: its limit, capped at the
// machine's online CPUs; 0 when the stats say nothing of those and there
// is no limit.
func cpuLimit(cpu container.CPUStats, hc *container.HostConfig) float64 {
	online := float64(cpu.OnlineCPUs)
	if online == 0 {
		online = float64(len(cpu.CPUUsage.PercpuUsage))
	}
	limit := 0.0
	if hc != nil {
		switch {
		case hc.NanoCPUs > 0:
			limit = float64(hc.NanoCPUs) / 1e9
		case hc.CPUQuota > 0:
			period := hc.CPUPeriod
			if period <= 0 {
				period = 100_000 // the kernel's default, in µs
			}
			limit = float64(hc.CPUQuota) / float64(period)
		}
	}
	if limit > 0 && (online == 0 || limit < online) {
		return limit
	}
	return online
}
