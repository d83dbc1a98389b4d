package guardrails_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
)

// usageDriver is a driver that reads the usage the test sets; its other
// methods are not called.
type usageDriver struct {
	drivers.Driver
	usage map[plan.Side][]drivers.Usage
}

func (d usageDriver) Usage(_ context.Context, side plan.Side) ([]drivers.Usage, error) {
	return d.usage[side], nil
}

func resourcesSource(p *plan.Plan, usage string, side plan.Side) guardrails.Source {
	return guardrails.SourceOf(plan.MetricSource{Resources: &plan.Resources{Usage: usage}}).For(p, side)
}

func TestResources(t *testing.T) {
	p := comparePlan(plan.Guardrail{Name: "cpu"})
	d := usageDriver{usage: map[plan.Side][]drivers.Usage{
		plan.Candidate: {{Instance: "v2-a", CPU: 40, Memory: 70}, {Instance: "v2-b", CPU: 85, Memory: 20}},
	}}
	opens := 0
	r := guardrails.NewResources(func(context.Context, *plan.Plan) (drivers.Driver, error) { opens++; return d, nil })

	m := r.Measure(context.Background(), resourcesSource(p, plan.UsageCPU, plan.Candidate), t0)
	if m.Err != nil || m.Value != 85 || !strings.Contains(m.Detail, "v2-b 85% of its limit, the busiest of 2") {
		t.Errorf("cpu: %+v", m)
	}
	m = r.Measure(context.Background(), resourcesSource(p, plan.UsageMemory, plan.Candidate), t0)
	if m.Err != nil || m.Value != 70 {
		t.Errorf("memory: %+v", m)
	}
	samples, err := r.Samples(context.Background(), resourcesSource(p, plan.UsageMemory, plan.Candidate), t0, t0, time.Second)
	if err != nil || len(samples) != 2 {
		t.Errorf("samples: %v, %v", samples, err)
	}
	if m := r.Measure(context.Background(), resourcesSource(p, plan.UsageCPU, plan.Stable), t0); !errors.Is(m.Err, guardrails.ErrNoData) ||
		!strings.Contains(m.Err.Error(), "no running instance of stable (v1)") {
		t.Errorf("no stable instance: %+v", m)
	}
	if opens != 1 {
		t.Errorf("the driver was opened %d times, want once", opens)
	}

	// A driver that cannot read usage says so.
	r = guardrails.NewResources(func(context.Context, *plan.Plan) (drivers.Driver, error) { return struct{ drivers.Driver }{}, nil })
	if m := r.Measure(context.Background(), resourcesSource(p, plan.UsageCPU, plan.Candidate), t0); m.Err == nil ||
		!strings.Contains(m.Err.Error(), "the docker driver cannot read resource use") {
		t.Errorf("no usage reader: %+v", m)
	}
}

// TestResourcesSlowOpen: one plan's driver that is slow to open holds up
// no other plan's measurement.
func TestResourcesSlowOpen(t *testing.T) {
	slow, fast := comparePlan(plan.Guardrail{Name: "cpu"}), comparePlan(plan.Guardrail{Name: "cpu"})
	slow.Metadata.Name = "slow"
	release, entered := make(chan struct{}), make(chan struct{})
	d := usageDriver{usage: map[plan.Side][]drivers.Usage{plan.Candidate: {{Instance: "a", CPU: 1}}}}
	r := guardrails.NewResources(func(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
		if p.Metadata.Name == "slow" {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return d, nil
	})
	go r.Measure(context.Background(), resourcesSource(slow, plan.UsageCPU, plan.Candidate), t0)
	<-entered
	done := make(chan guardrails.Measurement)
	go func() {
		done <- r.Measure(context.Background(), resourcesSource(fast, plan.UsageCPU, plan.Candidate), t0)
	}()
	select {
	case m := <-done:
		if m.Err != nil || m.Value != 1 {
			t.Errorf("fast: %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a plan's measurement waited on another plan's driver opening")
	}
	close(release)
}
