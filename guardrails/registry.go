package guardrails

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
)

// Kind is a kind of source: the name of the plan's block for it, and how
// messages speak of its sources. Each provider's file registers its kind.
type Kind struct {
	// Name is the kind, as plan.MetricSource.Kind returns it: "prometheus".
	Name string
	// Noun names one source of the kind and Plural several: "an HTTP
	// check", "http checks".
	Noun, Plural string
	// Unconfigured, when set, follows the error of a source of the kind
	// that no provider is configured for, saying what would configure one.
	Unconfigured string
}

// kinds are the registered kinds of source, by name.
var kinds = map[string]Kind{}

// register records a kind of source and returns it. Each provider's file
// registers its own, once.
func register(k Kind) Kind {
	if _, dup := kinds[k.Name]; dup {
		panic("guardrails: the source kind " + k.Name + " is registered twice")
	}
	kinds[k.Name] = k
	return k
}

// Kinds lists the registered kinds of source, sorted: what pre-check can
// be limited to besides the daemon's own parts.
func Kinds() []string { return slices.Sorted(maps.Keys(kinds)) }

// kindNames lists the registered kinds, for messages.
func kindNames() string { return strings.Join(Kinds(), ", ") }

// describe returns the registered kind named name, or one that speaks of a
// kind nothing registered (a provider added only by its user).
func describe(name string) Kind {
	if k, ok := kinds[name]; ok {
		return k
	}
	return Kind{Name: name, Noun: "a " + name + " source", Plural: name + " sources"}
}

// Providers are the providers configured, by the kind of source each
// measures. A registered kind with no provider is one nothing is
// configured for: its sources then measure an ErrNoProvider error. The
// map is the registry the Evaluator, the Checker, backtests and pre-check
// measure through; what else a provider can do it says by implementing
// RangeQuerier or Pinger.
type Providers map[string]Provider

var _ Provider = Providers(nil)

// Provider returns the provider of a kind of source; an error wrapping
// ErrNoProvider when the kind is registered and none is configured for
// it, another naming the kind when it is unknown.
func (ps Providers) Provider(kind string) (Provider, error) {
	if p := ps[kind]; p != nil {
		return p, nil
	}
	k, known := kinds[kind]
	switch {
	case kind == "":
		return nil, fmt.Errorf("no source: want one of %s", kindNames())
	case !known:
		return nil, fmt.Errorf("unknown source kind %q: the kinds are %s", kind, kindNames())
	case k.Unconfigured != "":
		return nil, fmt.Errorf("%w for %s: %s", ErrNoProvider, k.Plural, k.Unconfigured)
	}
	return nil, fmt.Errorf("%w for %s", ErrNoProvider, k.Plural)
}

// Measure asks the provider of src's kind.
func (ps Providers) Measure(ctx context.Context, src Source, at time.Time) Measurement {
	p, err := ps.Provider(src.Kind)
	if err != nil {
		return Measurement{Err: err}
	}
	return p.Measure(ctx, src, at)
}

// RangeQuerier is a provider that can read a source's history, as plan
// backtest replays it: Prometheus. A guardrail whose provider is not one
// counts as healthy in a backtest.
type RangeQuerier interface {
	// Range returns src's values at every step from start to end, each
	// series its points in time order.
	Range(ctx context.Context, src Source, start, end time.Time, step time.Duration) ([]Series, error)
}

// Sampler is a provider that can read many values of a source, as a
// statistical test judges them: Prometheus reads a range, resources each
// instance.
type Sampler interface {
	// Samples returns src's values over [from, to] every step (or, for a
	// source with no history, of every instance now), NaN dropped, at most
	// maxSamples of them.
	Samples(ctx context.Context, src Source, from, to time.Time, step time.Duration) ([]float64, error)
}

// maxSamples bounds the samples of one side a test judges: its work grows
// with their product.
const maxSamples = 2000

// thin keeps at most maxSamples of vs, every k-th.
func thin(vs []float64) []float64 {
	if len(vs) <= maxSamples {
		return vs
	}
	k := (len(vs) + maxSamples - 1) / maxSamples
	out := make([]float64, 0, maxSamples)
	for i := 0; i < len(vs); i += k {
		out = append(out, vs[i])
	}
	return out
}

// Pinger is a provider with a backend that can be asked whether it
// answers, as pre-check does: Prometheus.
type Pinger interface {
	// Ping returns nil when the backend answers, else an error naming it.
	Ping(ctx context.Context) error
}

// Probe measures src once, now, for pre-check --deep: a failed check is an
// error saying so. It makes Providers a daemon.Prober.
func (ps Providers) Probe(ctx context.Context, p *plan.Plan, side plan.Side, src plan.MetricSource) (float64, error) {
	m := ps.Measure(ctx, SourceOf(src).For(p, side), time.Now())
	if m.Err != nil {
		return m.Value, m.Err
	}
	if m.Failed {
		return m.Value, fmt.Errorf("the check failed: %s", m.Detail)
	}
	return m.Value, nil
}

// Reachable asks every provider that is a Pinger whether its backend
// answers: ok is false when none is, and the error names those that do
// not answer.
func (ps Providers) Reachable(ctx context.Context) (ok bool, err error) {
	var errs []error
	for _, kind := range slices.Sorted(maps.Keys(ps)) {
		if p, is := ps[kind].(Pinger); is {
			ok = true
			if err := p.Ping(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return ok, errors.Join(errs...)
}
