package guardrails_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
)

// dice is a provider of a kind no plan can name, registered only here: a
// source of kind "dice" reads the number its block holds.
type dice struct{}

func (dice) Measure(_ context.Context, src guardrails.Source, _ time.Time) guardrails.Measurement {
	return guardrails.Measurement{Value: float64(src.Block.(int))}
}

// TestProvidersUnknownKind: a source of a kind nothing registered is an
// error naming the kind, not a measurement by another kind's provider.
func TestProvidersUnknownKind(t *testing.T) {
	ps := guardrails.Providers{"prometheus": dice{}, "http": dice{}}
	m := ps.Measure(context.Background(), guardrails.Source{Kind: "dice", Block: 6}, time.Now())
	if m.Err == nil || !strings.Contains(m.Err.Error(), `unknown source kind "dice"`) {
		t.Fatalf("measured %+v, want an error naming the kind dice", m)
	}
	if errors.Is(m.Err, guardrails.ErrNoProvider) {
		t.Errorf("an unknown kind reads as one nothing is configured for: %v", m.Err)
	}
	if m := ps.Measure(context.Background(), guardrails.Source{}, time.Now()); m.Err == nil {
		t.Errorf("a source of no kind measured %+v", m)
	}
}

// TestProvidersUnconfigured: a registered kind with no provider is
// ErrNoProvider, saying what would configure one.
func TestProvidersUnconfigured(t *testing.T) {
	for _, tc := range []struct {
		src  plan.MetricSource
		want string
	}{
		{plan.MetricSource{Prometheus: &plan.Prometheus{Query: "up"}}, "no provider for prometheus queries: the daemon's configuration names no Prometheus"},
		{plan.MetricSource{HTTP: &plan.HTTPCheck{URL: "http://x"}}, "no provider for http checks"},
	} {
		m := guardrails.Providers{}.Measure(context.Background(), guardrails.SourceOf(tc.src), time.Now())
		if !errors.Is(m.Err, guardrails.ErrNoProvider) || m.Err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %q", tc.src.Kind(), m.Err, tc.want)
		}
	}
}

// TestProvidersOwnKind: a provider of a kind registered only by its user is
// measured through the same registry as Prometheus and HTTP, with no
// change to the package; pre-check's Probe and Reachable take it too.
func TestProvidersOwnKind(t *testing.T) {
	ps := guardrails.Providers{"dice": dice{}}
	m := ps.Measure(context.Background(), guardrails.Source{Kind: "dice", Block: 4}, time.Now())
	if m.Err != nil || m.Value != 4 {
		t.Fatalf("measured %+v, want 4", m)
	}
	if ok, err := ps.Reachable(context.Background()); ok || err != nil {
		t.Errorf("reachable %v, %v: dice has no backend to ask", ok, err)
	}
}
