package guardrails

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

// KindResources is the kind of a source that is the CPU or memory a side's
// workloads use, as their driver reads it: a plan's resources block, a
// *plan.Resources.
const KindResources = "resources"

var resourcesKind = register(Kind{
	Name:         KindResources,
	Noun:         "a resources source",
	Plural:       "resources sources",
	Unconfigured: "the daemon opens no driver for it",
})

// Resources reads the CPU and memory use of a plan's workloads through the
// plan's driver (the Docker engine's stats, Kubernetes' metrics.k8s.io):
// the value of a side is its busiest instance's use, in percent of that
// instance's limit, and its samples are every instance's. It is safe for
// concurrent use. Create one with NewResources.
type Resources struct {
	open drivers.Opener

	mu     sync.Mutex
	opened map[string]*openDriver
}

// openDriver is the driver opened for one plan, and the driver block it
// was opened for. Its own lock: one plan's slow open holds up no other's.
type openDriver struct {
	mu  sync.Mutex
	def string
	drv drivers.Driver
}

var (
	_ Provider = (*Resources)(nil)
	_ Sampler  = (*Resources)(nil)
)

// NewResources returns a provider reading usage through the drivers open
// opens: the daemon's own opener, so the same engine or cluster is read.
// A plan's driver is opened once, and again when its driver block changes.
func NewResources(open drivers.Opener) *Resources {
	return &Resources{open: open, opened: map[string]*openDriver{}}
}

// Measure returns the use of src's side: its busiest instance's, which the
// Detail names.
func (r *Resources) Measure(ctx context.Context, src Source, _ time.Time) Measurement {
	res, us, err := r.usage(ctx, src)
	if err != nil {
		return Measurement{Err: err}
	}
	busiest, v := "", -1.0
	for _, u := range us {
		if x := pick(res, u); x > v {
			busiest, v = u.Instance, x
		}
	}
	return Measurement{Value: v, Detail: fmt.Sprintf("%s %s%% of its limit, the busiest of %d", busiest, formatValue(round(v)), len(us))}
}

// Samples returns the use of every instance of src's side now: usage has
// no history to range over.
func (r *Resources) Samples(ctx context.Context, src Source, _, _ time.Time, _ time.Duration) ([]float64, error) {
	res, us, err := r.usage(ctx, src)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(us))
	for i, u := range us {
		out[i] = pick(res, u)
	}
	return thin(out), nil
}

// usage reads the use of every running instance of src's side; none is
// ErrNoData.
func (r *Resources) usage(ctx context.Context, src Source) (*plan.Resources, []drivers.Usage, error) {
	res, ok := src.Block.(*plan.Resources)
	if src.Kind != resourcesKind.Name || !ok || res == nil {
		return nil, nil, fmt.Errorf("a source of kind %q is not a resources source", src.Kind)
	}
	if src.Plan == nil {
		return nil, nil, fmt.Errorf("a resources source measures a plan's workloads: no plan given")
	}
	drv, err := r.driver(ctx, src.Plan)
	if err != nil {
		return nil, nil, err
	}
	reader, ok := drv.(drivers.UsageReader)
	if !ok {
		return nil, nil, fmt.Errorf("the %s driver cannot read resource use", src.Plan.Spec.Driver.Name())
	}
	us, err := reader.Usage(ctx, src.side())
	if err != nil {
		return nil, nil, fmt.Errorf("read the %s use of %s: %w", res.Usage, src.side(), err)
	}
	if len(us) == 0 {
		return nil, nil, fmt.Errorf("no running instance of %s (%s): %w", src.side(), src.Plan.SideValue(src.side()), ErrNoData)
	}
	return res, us, nil
}

// driver returns p's driver, opened once per driver block.
func (r *Resources) driver(ctx context.Context, p *plan.Plan) (drivers.Driver, error) {
	def, _ := json.Marshal(p.Spec.Driver)
	r.mu.Lock()
	o, ok := r.opened[p.Metadata.Name]
	if !ok {
		o = &openDriver{}
		r.opened[p.Metadata.Name] = o
	}
	r.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.drv != nil && o.def == string(def) {
		return o.drv, nil
	}
	drv, err := r.open(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("open the %s driver of %s: %w", p.Spec.Driver.Name(), p.Metadata.Name, err)
	}
	o.def, o.drv = string(def), drv
	return drv, nil
}

func pick(res *plan.Resources, u drivers.Usage) float64 {
	if res.Usage == plan.UsageMemory {
		return u.Memory
	}
	return u.CPU
}

// round keeps a percentage's first decimal.
func round(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
