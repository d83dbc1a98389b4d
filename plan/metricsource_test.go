package plan

import "testing"

// TestMetricSourceKind: a source's kind is the name of the block the plan
// sets, read from YAML as from Go, and empty when it sets none.
func TestMetricSourceKind(t *testing.T) {
	p := loadBase(t)
	kinds := map[string]string{}
	for _, g := range p.Spec.Guardrails {
		kind, block := g.Block()
		if block == nil {
			t.Errorf("guardrail %s: no block of kind %q", g.Name, kind)
		}
		kinds[g.Name] = kind
	}
	if kinds["errors"] != "prometheus" || kinds["health"] != "http" {
		t.Errorf("the base plan's guardrails are of kinds %v, want errors prometheus and health http", kinds)
	}
	if k := (MetricSource{HTTP: &HTTPCheck{URL: "http://x"}}).Kind(); k != "http" {
		t.Errorf("an HTTP check is of kind %q", k)
	}
	if k, b := (MetricSource{}).Block(); k != "" || b != nil {
		t.Errorf("an empty source is of kind %q, block %v", k, b)
	}
}
