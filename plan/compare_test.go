package plan

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestComparePlanIsValid(t *testing.T) {
	v := newValidator(t)
	p, err := v.ValidateOne(Source{Path: "testdata/compare.yaml", Data: mustRead(t, "testdata/compare.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Spec.Guardrails[0].Compare
	if c == nil || c.MaxIncrease == nil || *c.MaxIncrease != 0.2 || c.MaxDelta == nil || *c.MaxDelta != 0.01 || c.HigherIsBetter() {
		t.Errorf("p99 compare = %+v", c)
	}
	if rps := p.Spec.Guardrails[1].Compare; !rps.HigherIsBetter() || !rps.PerShare || *rps.Relative() != 0 {
		t.Errorf("rps compare = %+v", rps)
	}
	lat := p.Spec.Guardrails[2]
	if lat.Compare.Test != TestMannWhitney || lat.Compare.TestConfidence() != 0.99 || lat.Compare.TestMinSamples() != DefaultMinSamples || lat.TestWindow() != DefaultWindow {
		t.Errorf("lat = %+v", lat.Compare)
	}
	if k := p.Spec.Guardrails[3].Kind(); k != "resources" {
		t.Errorf("cpu kind = %q", k)
	}
	if got := p.SideValue(Stable) + "/" + p.SideValue(Candidate); got != "v1/v2" {
		t.Errorf("sides = %s", got)
	}
	p.Spec.Sides = nil
	if got := p.SideValue(Stable) + "/" + p.SideValue(Candidate); got != "app-v1/app-v2" {
		t.Errorf("default docker sides = %s", got)
	}
}

func TestComparePlanErrors(t *testing.T) {
	v := newValidator(t)
	set := v.Validate([]Source{{Path: "bad.yaml", Data: mustRead(t, "testdata/compare-bad.yaml")}})
	want := []string{
		`bad.yaml:10:19: spec.sides.stable: invalid value "v1\"}" (expected a label value of letters, digits, '_', '.', ':', '/' and '-')`,
		`bad.yaml:16:30: spec.guardrails.0.compare.maxIncrease: invalid value 20 (expected a percentage such as "20%")`,
		`bad.yaml:20:30: spec.guardrails.1.compare.maxDecrease: better: lower wants the candidate no higher than stable (expected maxIncrease)`,
		`bad.yaml:20:61: spec.guardrails.1.compare.confidence: confidence is a setting of the test (expected test: mann-whitney with it)`,
		`bad.yaml:24:7: spec.guardrails.2.compare: an http check is not compared with stable (compare needs prometheus or resources)`,
		`bad.yaml:26:26: spec.guardrails.3.resources.usage: invalid value "disk" (expected "cpu" or "memory")`,
		`bad.yaml:30:7: spec.guardrails.4.compare: a comparison needs a tolerance or a test (expected maxIncrease, maxDecrease, maxDelta or test)`,
	}
	var got []string
	for _, e := range set.Errors {
		got = append(got, e.Error())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func TestCompareQueryNeedsSide(t *testing.T) {
	v := newValidator(t)
	data := strings.Replace(string(mustRead(t, "testdata/compare.yaml")), `x{version="$side"}`, `x{version="v2"}`, 1)
	_, err := v.ValidateOne(Source{Path: "p.yaml", Data: []byte(data)})
	if err == nil || !strings.Contains(err.Error(), `spec.guardrails.1.prometheus.query: a compared query is run once for each side and must say where the side goes (expected $side, as in version="$side")`) {
		t.Errorf("err = %v", err)
	}
}

func TestPercent(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Percent
		ok   bool
	}{{`"20%"`, 0.2, true}, {`"2.5%"`, 0.025, true}, {`"0%"`, 0, true}, {`"20"`, 0, false}, {`20`, 0, false}, {`"-1%"`, 0, false}, {`"NaN%"`, 0, false}} {
		var p Percent
		err := json.Unmarshal([]byte(tt.in), &p)
		if (err == nil) != tt.ok || tt.ok && p != tt.want {
			t.Errorf("%s: %v, %v", tt.in, p, err)
		}
		if tt.ok {
			if b, _ := json.Marshal(p); string(b) != tt.in {
				t.Errorf("%s written back as %s", tt.in, b)
			}
		}
	}
}
