package plan

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Side is one side of a migration: the stable workloads, or the candidate
// that replaces them.
type Side string

// The two sides.
const (
	Stable    Side = "stable"
	Candidate Side = "candidate"
)

// Sides are the values a guardrail's query template takes for each side:
// `$side` in `version="$side"` becomes Stable when stable is measured and
// Candidate when the candidate is.
type Sides struct {
	Stable    string `json:"stable" yaml:"stable"`
	Candidate string `json:"candidate" yaml:"candidate"`
}

// SideVar is what a query writes where each side's value goes.
const SideVar = "$side"

// SideValue returns the value `$side` takes for side: spec.sides when the
// plan sets it, else the driver's names of the workloads (the Deployments,
// the Compose services or container prefixes).
func (p *Plan) SideValue(side Side) string {
	s := p.Spec.Sides
	if s == nil {
		s = p.Spec.Driver.defaultSides()
	}
	if side == Stable {
		return s.Stable
	}
	return s.Candidate
}

// defaultSides names each side as its driver block does.
func (d Driver) defaultSides() *Sides {
	switch {
	case d.Kubernetes != nil:
		return &Sides{Stable: d.Kubernetes.Stable.Deployment, Candidate: d.Kubernetes.Candidate.Deployment}
	case d.Docker != nil:
		name := func(w DockerWorkload) string {
			if w.Service != "" {
				return w.Service
			}
			return w.Container
		}
		return &Sides{Stable: name(d.Docker.Stable), Candidate: name(d.Docker.Candidate)}
	}
	return &Sides{}
}

// Comparison judges a guardrail's value for the candidate against stable's,
// each measured by the same source with `$side` set to that side's value,
// instead of against a fixed bound. The candidate fails when it is worse
// than stable by more than every tolerance set; with Test set, when the
// test also finds it worse with the confidence asked.
type Comparison struct {
	// Better says which way is better: "lower" (the default, for error
	// rates and latencies) or "higher" (throughput).
	Better string `json:"better,omitempty" yaml:"better,omitempty"`
	// MaxIncrease is how far above stable a lower-is-better value may be,
	// as a share of stable's; MaxDecrease how far below a higher-is-better
	// one may be. MaxDelta is the same in the value's own units. When
	// both kinds are set the candidate fails only past both: the delta
	// keeps a tiny baseline (0.001 errors/s) from failing on a relative
	// change nobody notices.
	MaxIncrease *Percent `json:"maxIncrease,omitempty" yaml:"maxIncrease,omitempty"`
	MaxDecrease *Percent `json:"maxDecrease,omitempty" yaml:"maxDecrease,omitempty"`
	MaxDelta    *float64 `json:"maxDelta,omitempty" yaml:"maxDelta,omitempty"`
	// PerShare divides each side's value by the share of traffic it gets,
	// so that rates compare per unit of traffic: a candidate serving 10%
	// of requests is not 90% worse at throughput.
	PerShare bool `json:"perShare,omitempty" yaml:"perShare,omitempty"`
	// Test judges the samples of each side over Window rather than one
	// value each: "mann-whitney".
	Test string `json:"test,omitempty" yaml:"test,omitempty"`
	// Confidence is the test's confidence, 0.95 by default: the candidate
	// fails when the chance of seeing samples this far apart with no real
	// difference is under 1 - Confidence.
	Confidence float64 `json:"confidence,omitempty" yaml:"confidence,omitempty"`
	// MinEffect is the least shift (Hodges–Lehmann, as a share of stable's
	// median) that fails: a significant shift smaller than it passes.
	MinEffect *Percent `json:"minEffect,omitempty" yaml:"minEffect,omitempty"`
	// Window is how far back the test's samples reach: the guardrail's
	// `for` when unset, and at least DefaultWindow.
	Window Duration `json:"window,omitempty" yaml:"window,omitempty"`
	// MinSamples is the least number of samples of each side the test
	// judges (DefaultMinSamples when unset); with fewer it is
	// inconclusive, which counts as no data.
	MinSamples int `json:"minSamples,omitempty" yaml:"minSamples,omitempty"`
}

// Directions of Comparison.Better.
const (
	Lower  = "lower"
	Higher = "higher"
)

// TestMannWhitney is the Mann-Whitney U test (Wilcoxon rank-sum).
const TestMannWhitney = "mann-whitney"

// Defaults of a Comparison's test.
const (
	DefaultConfidence = 0.95
	DefaultMinSamples = 5
	DefaultWindow     = Duration(5 * 60 * 1e9)
)

// HigherIsBetter reports whether the guardrail wants the candidate's value
// high: Better is "higher", or MaxDecrease is set.
func (c Comparison) HigherIsBetter() bool {
	return c.Better == Higher || c.Better == "" && c.MaxDecrease != nil
}

// Relative returns the relative tolerance: MaxIncrease or MaxDecrease.
func (c Comparison) Relative() *Percent {
	if c.MaxIncrease != nil {
		return c.MaxIncrease
	}
	return c.MaxDecrease
}

// TestConfidence returns Confidence, or its default.
func (c Comparison) TestConfidence() float64 {
	if c.Confidence > 0 {
		return c.Confidence
	}
	return DefaultConfidence
}

// TestMinSamples returns MinSamples, or its default.
func (c Comparison) TestMinSamples() int {
	if c.MinSamples > 0 {
		return c.MinSamples
	}
	return DefaultMinSamples
}

// TestWindow returns how far back g's test samples reach.
func (g Guardrail) TestWindow() Duration {
	if c := g.Compare; c != nil && c.Window > 0 {
		return c.Window
	}
	return max(g.For, DefaultWindow)
}

// Resources is the CPU or memory use of a side's workloads, as the driver
// reads it (the Docker engine's stats, Kubernetes' metrics.k8s.io): in
// percent of each instance's limit, the busiest instance's.
type Resources struct {
	// Usage is "cpu" or "memory".
	Usage string `json:"usage" yaml:"usage"`
}

// Kinds of Resources.Usage.
const (
	UsageCPU    = "cpu"
	UsageMemory = "memory"
)

// Percent is a share written "20%" in a plan, held as a fraction (0.2).
type Percent float64

// String writes p as the plan does: "20%", "2.5%".
func (p Percent) String() string {
	return strconv.FormatFloat(float64(p)*100, 'f', -1, 64) + "%"
}

// MarshalJSON writes p as "20%".
func (p Percent) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON reads "20%".
func (p *Percent) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a share must be a string such as \"20%%\": %w", err)
	}
	return p.parse(s)
}

// MarshalYAML writes p as "20%".
func (p Percent) MarshalYAML() (any, error) { return p.String(), nil }

// UnmarshalYAML reads "20%".
func (p *Percent) UnmarshalYAML(n *yaml.Node) error { return p.parse(n.Value) }

func (p *Percent) parse(s string) error {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || f < 0 || f != f {
		return fmt.Errorf("%q is not a share: want a percentage such as \"20%%\"", s)
	}
	*p = Percent(f / 100)
	return nil
}
