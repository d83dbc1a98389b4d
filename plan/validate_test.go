package plan

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func newValidator(t testing.TB) *Validator {
	t.Helper()
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readBase(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInvalidPlans edits a valid plan one way at a time and checks the exact
// errors, with their positions.
func TestInvalidPlans(t *testing.T) {
	base := readBase(t)
	v := newValidator(t)
	tests := []struct {
		name     string
		old, new string
		want     []string
	}{
		{"wrong apiVersion", "apiVersion: migrate.hal9.ai/v1", "apiVersion: v2",
			[]string{`p.yaml:1:13: apiVersion: invalid value "v2" (expected "migrate.hal9.ai/v1")`}},
		{"wrong kind", "kind: MigrationPlan", "kind: Plan",
			[]string{`p.yaml:2:7: kind: invalid value "Plan" (expected "MigrationPlan")`}},
		{"name not a DNS label", "  name: base", "  name: Base_Plan",
			[]string{`p.yaml:4:9: metadata.name: invalid value "Base_Plan" (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)`}},
		{"name too long", "  name: base", "  name: " + strings.Repeat("a", 64),
			[]string{`p.yaml:4:9: metadata.name: invalid value "` + strings.Repeat("a", 55) + `..." (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)`}},
		{"missing target phase points at target", "    phase: canary\n", "",
			[]string{`p.yaml:6:3: spec.target.phase: missing required field (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)`}},
		{"missing stable workload points at the driver", "      stable: {deployment: shop-v1}\n", "",
			[]string{`p.yaml:10:5: spec.driver.kubernetes.stable: missing required field (expected a mapping)`}},
		{"target phase unknown", "    phase: canary", "    phase: kanary",
			[]string{`p.yaml:7:12: spec.target.phase: unknown phase "kanary" (expected one of shadow, canary, migrate, full)`}},
		{"target percentage above phase", "    percentage: 10", "    percentage: 30",
			[]string{`p.yaml:8:17: spec.target.percentage: 30 is outside phase "canary" (expected 0..25)`}},
		{"target percentage on a run phase", "    phase: canary\n    percentage: 10", "    phase: migrate\n    percentage: 10",
			[]string{`p.yaml:8:17: spec.target.percentage: phase "migrate" has no steps (expected no percentage for a run phase)`}},
		{"steps not increasing", "steps: [5, 10, 25]", "steps: [5, 25, 10]",
			[]string{`p.yaml:19:22: spec.phases.1.steps.2: 10 is not greater than previous step 25 (steps must strictly increase)`}},
		{"a whole number written as a float", "steps: [5, 10, 25]", "steps: [5, 10.0, 25]",
			[]string{`p.yaml:19:18: spec.phases.1.steps.1: invalid value 10.0 (expected an integer > 0 and <= 100)`}},
		{"step equal to previous", "steps: [5, 10, 25]", "steps: [5, 5, 25]",
			[]string{`p.yaml:19:18: spec.phases.1.steps.1: 5 is not greater than previous step 5 (steps must strictly increase)`}},
		{"step above 100", "steps: [5, 10, 25]", "steps: [5, 10, 250]",
			[]string{`p.yaml:19:22: spec.phases.1.steps.2: invalid value 250 (expected an integer > 0 and <= 100)`}},
		{"step zero", "steps: [5, 10, 25]", "steps: [0, 10, 25]",
			[]string{`p.yaml:19:15: spec.phases.1.steps.0: invalid value 0 (expected an integer > 0 and <= 100)`}},
		{"empty steps", "steps: [5, 10, 25]", "steps: []",
			[]string{`p.yaml:19:7: spec.phases.1.steps: invalid value [] (expected at least one item)`}},
		{"fractional step", "steps: [5, 10, 25]", "steps: [5, 10.5, 25]",
			[]string{`p.yaml:19:18: spec.phases.1.steps.1: invalid value 10.5 (expected an integer > 0 and <= 100)`}},
		{"misspelt field", "steps: [5, 10, 25]", "stesp: [5, 10, 25]",
			[]string{`p.yaml:19:7: spec.phases.1.stesp: unknown field "stesp", did you mean "steps"? (expected one of name, steps, mirror, run, soak, checkpoint, verify, irreversible, decommission, after)`}},
		{"mirror as a string", "      mirror: 100", "      mirror: \"100\"",
			[]string{`p.yaml:16:15: spec.phases.0.mirror: invalid value "100" (expected an integer > 0 and <= 100)`}},
		{"mirror and steps", "      mirror: 100", "      mirror: 100\n      steps: [1]",
			[]string{`p.yaml:16:15: spec.phases.0.mirror: only one of steps, mirror or run is allowed (steps is set too)`}},
		{"phase without kind", "      mirror: 100\n", "",
			[]string{`p.yaml:15:7: spec.phases.0: a phase needs one of steps, mirror or run`}},
		{"soak not a duration", "      soak: 2h", "      soak: 2 hours",
			[]string{`p.yaml:20:13: spec.phases.1.soak: invalid value "2 hours" (expected a Go duration such as 90s, 5m or 24h)`}},
		{"reserved phase name", "- name: shadow", "- name: start",
			[]string{`p.yaml:15:13: spec.phases.0.name: invalid value "start" (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, not "start" and not "previous-step")`}},
		{"duplicate phase name", "    - name: full", "    - name: canary",
			[]string{`p.yaml:26:13: spec.phases.3.name: duplicate phase name "canary" (first used by spec.phases.1)`}},
		{"unknown verify check", "      verify: [integrity]", "      verify: [integrity, smoke]",
			[]string{`p.yaml:24:27: spec.phases.2.verify.1: unknown check "smoke" (expected one of "integrity")`}},
		{"two drivers", "    kubernetes:", "    docker: {stable: {service: a}, candidate: {service: b}}\n    kubernetes:",
			[]string{`p.yaml:10:5: spec.driver.docker: only one driver is allowed (kubernetes is set too)`}},
		{"no driver", "    kubernetes:\n      traffic: {httpRoute: shop}\n      stable: {deployment: shop-v1}\n      candidate: {deployment: shop-v2}\n", "    {}\n",
			[]string{`p.yaml:9:3: spec.driver: a driver is required (expected kubernetes or docker)`}},
		{"cluster not a DNS label", "      traffic: {httpRoute: shop}", "      cluster: Bad_Name\n      traffic: {httpRoute: shop}",
			[]string{`p.yaml:11:16: spec.driver.kubernetes.cluster: invalid value "Bad_Name" (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)`}},
		{"two routes", "      traffic: {httpRoute: shop}", "      traffic: {httpRoute: shop, grpcRoute: shop}",
			[]string{`p.yaml:11:45: spec.driver.kubernetes.traffic.grpcRoute: only one route is allowed (httpRoute is set too)`}},
		{"no route", "      traffic: {httpRoute: shop}", "      traffic: {}",
			[]string{`p.yaml:11:7: spec.driver.kubernetes.traffic: a route is required (expected httpRoute or grpcRoute)`}},
		{"guardrail without bound", "      max: 0.05\n", "",
			[]string{`p.yaml:30:7: spec.guardrails.0: a prometheus guardrail needs a bound (expected max, min or compare)`}},
		{"guardrail with two sources", "      http: {url: 'http://shop-v2/health'}", "      http: {url: 'http://shop-v2/health'}\n      prometheus: {query: up}",
			[]string{`p.yaml:35:7: spec.guardrails.1.http: only one source is allowed (prometheus is set too)`}},
		{"duplicate guardrail name", "    - name: health", "    - name: errors",
			[]string{`p.yaml:34:13: spec.guardrails.1.name: duplicate guardrail name "errors" (first used by spec.guardrails.0)`}},
		{"zero failures", "      failures: 3", "      failures: 0",
			[]string{`p.yaml:36:17: spec.guardrails.1.failures: invalid value 0 (expected an integer >= 1)`}},
		{"health URL without scheme", "      http: {url: 'http://shop-v2/health'}", "      http: {url: 'shop-v2/health'}",
			[]string{`p.yaml:35:19: spec.guardrails.1.http.url: invalid value "shop-v2/health" (expected an http:// or https:// URL)`}},
		{"rollback to unknown phase", "    to: previous-step", "    to: nowhere",
			[]string{`p.yaml:38:9: spec.rollback.to: unknown phase "nowhere" (expected previous-step, start or one of shadow, canary, migrate, full)`}},
		{"rollback to not a name", "    to: previous-step", "    to: Previous_Step",
			[]string{`p.yaml:38:9: spec.rollback.to: invalid value "Previous_Step" (expected "previous-step", "start" or a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)`}},
		{"onNoData unknown", "    onNoData: hold", "    onNoData: panic",
			[]string{`p.yaml:39:15: spec.rollback.onNoData: invalid value "panic" (expected "hold", "rollback" or "ignore")`}},
		{"feature above 100", "    new_cart: 10", "    new_cart: 110",
			[]string{`p.yaml:43:15: spec.features.new_cart: invalid value 110 (expected an integer >= 0 and <= 100)`}},
		{"decommission before 100", "      steps: [100]", "      steps: [90]",
			[]string{`p.yaml:28:7: spec.phases.3.decommission: decommissioning stable needs the candidate at 100% (expected a phase ending at 100, this one ends at 90)`}},
		{"traffic decreases between phases", "      steps: [100]", "      steps: [20, 100]",
			[]string{`p.yaml:27:15: spec.phases.3.steps.0: 20 would lower traffic from the 25% the phases before reach (expected at least 25)`}},
		{"mirror without a router", "      traffic: {httpRoute: shop}\n", "",
			[]string{`p.yaml:15:15: spec.phases.0.mirror: mirroring needs a router to copy requests (expected spec.driver.kubernetes.traffic)`}},
		{"mirror through haproxy", "    kubernetes:\n      traffic: {httpRoute: shop}\n      stable: {deployment: shop-v1}\n      candidate: {deployment: shop-v2}\n",
			"    docker: {stable: {service: a}, candidate: {service: b}, traffic: {haproxy: {backend: shop}}}\n",
			[]string{`p.yaml:13:15: spec.phases.0.mirror: HAProxy cannot copy requests (expected spec.driver.docker.traffic.nginx for a plan with a mirror phase)`}},
		{"nginx and haproxy", "    kubernetes:\n      traffic: {httpRoute: shop}\n      stable: {deployment: shop-v1}\n      candidate: {deployment: shop-v2}\n",
			"    docker:\n      stable: {service: a}\n      candidate: {service: b}\n      traffic: {nginx: {upstream: shop}, haproxy: {backend: shop}}\n",
			[]string{`p.yaml:13:42: spec.driver.docker.traffic.haproxy: only one router is allowed (nginx is set too)`}},
		{"traffic without a router", "    kubernetes:\n      traffic: {httpRoute: shop}\n      stable: {deployment: shop-v1}\n      candidate: {deployment: shop-v2}\n",
			"    docker:\n      stable: {service: a}\n      candidate: {service: b}\n      traffic: {}\n",
			[]string{`p.yaml:13:7: spec.driver.docker.traffic: a router is required (expected nginx or haproxy)`}},
		{"mirror after traffic", "      checkpoint: pre-canary", "      checkpoint: pre-canary\n    - name: shadow2\n      mirror: 10",
			[]string{`p.yaml:23:15: spec.phases.2.mirror: a mirror phase sends the candidate no live traffic, so it would lower traffic from 25% to 0 (expected mirror phases before any phase with steps)`}},
		{"duplicate checkpoint", "      irreversible: true", "      irreversible: true\n      checkpoint: pre-canary",
			[]string{`p.yaml:26:19: spec.phases.2.checkpoint: duplicate checkpoint name "pre-canary" (first used by spec.phases.1)`}},
		{"unknown top-level section", "  guardrails:", "  guardrail:",
			[]string{`p.yaml:29:3: spec.guardrail: unknown field "guardrail", did you mean "guardrails"? (expected one of target, driver, phases, guardrails, rollback, verify, features, sides, group, after, promotion)`}},
		{"duplicate YAML key", "  name: base", "  name: base\n  name: again",
			[]string{`p.yaml:5:3: metadata.name: duplicate key "name" (first at line 4)`}},
		{"empty check", `    integrity: {run: {image: "migrator:1", command: [check]}}`, "    integrity: {}",
			[]string{`p.yaml:41:5: spec.verify.integrity: a check needs one of run, prometheus, http or resources`}},
		{"several errors at once, sorted", "      soak: 1h", "      soak: 1 hour\n      colour: blue",
			[]string{
				`p.yaml:17:13: spec.phases.0.soak: invalid value "1 hour" (expected a Go duration such as 90s, 5m or 24h)`,
				`p.yaml:18:7: spec.phases.0.colour: unknown field "colour" (expected one of name, steps, mirror, run, soak, checkpoint, verify, irreversible, decommission, after)`,
			}},
		{"invalid YAML", "  phases:", "  phases: [",
			[]string{`p.yaml:14:1: invalid YAML: did not find expected node content`}},
		{"two documents", "kind: MigrationPlan", "kind: MigrationPlan\n---\nkind: MigrationPlan",
			[]string{`p.yaml:3:1: more than one YAML document (expected one plan per file)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("base plan has no %q", tt.old)
			}
			src := strings.Replace(base, tt.old, tt.new, 1)
			wantErrors(t, v.Validate([]Source{{Path: "p.yaml", Data: []byte(src)}}), tt.want)
		})
	}
}

// TestKubernetesTrafficKinds accepts either kind of route, and Kind says
// which field names it.
func TestKubernetesTrafficKinds(t *testing.T) {
	base := readBase(t)
	v := newValidator(t)
	for _, tt := range []struct{ traffic, kind string }{
		{"{httpRoute: shop}", "httpRoute"},
		{"{grpcRoute: shop}", "grpcRoute"},
	} {
		src := strings.Replace(base, "traffic: {httpRoute: shop}", "traffic: "+tt.traffic, 1)
		p, err := v.ValidateOne(Source{Path: "p.yaml", Data: []byte(src)})
		if err != nil {
			t.Fatalf("traffic %s: %v", tt.traffic, err)
		}
		tr := p.Spec.Driver.Kubernetes.Traffic
		if tr.Kind() != tt.kind || tr.Route() != "shop" || !p.Spec.Driver.Routed() {
			t.Errorf("traffic %s: Kind %q, Route %q, Routed %t; want %s, shop, routed", tt.traffic, tr.Kind(), tr.Route(), p.Spec.Driver.Routed(), tt.kind)
		}
	}
}

// TestKubernetesCluster: a kubernetes block may name the cluster its
// Deployments are on; the compiled check proves such a plan valid without
// CUE, and CUE agrees. A plan without one leaves it empty.
func TestKubernetesCluster(t *testing.T) {
	base := readBase(t)
	v := newValidator(t)
	src := Source{Path: "p.yaml", Data: []byte(strings.Replace(base, "    kubernetes:\n", "    kubernetes:\n      cluster: prod\n", 1))}
	p, err := v.ValidateOne(src)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Spec.Driver.Kubernetes.Cluster; got != "prod" {
		t.Errorf("cluster %q, want prod", got)
	}
	doc, value := parseForTest(t, src)
	if value == nil || !v.quick.accepts(value) {
		t.Error("a plan naming a cluster is not proven valid by the compiled check (slow path)")
	}
	if err := cueJudges(t, v, doc); err != nil {
		t.Errorf("CUE rejects a plan naming a cluster: %v", err)
	}
	p, err = v.ValidateOne(Source{Path: "p.yaml", Data: []byte(base)})
	if err != nil || p.Spec.Driver.Kubernetes.Cluster != "" {
		t.Errorf("a plan without a cluster: cluster %q, %v", p.Spec.Driver.Kubernetes.Cluster, err)
	}
}

// wantErrors checks that set holds exactly the errors want, in order, and
// no plan.
func wantErrors(t *testing.T, set *Set, want []string) {
	t.Helper()
	var got []string
	for _, e := range set.Errors {
		got = append(got, e.Error())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	if len(set.Plans) != 0 {
		t.Errorf("plans %v accepted, want none", names(set.Plans))
	}
}

// TestAllErrorsAtOnce: CUE reports a conflict and drops the missing
// required fields and unknown fields beside it; the loader finds them too.
func TestAllErrorsAtOnce(t *testing.T) {
	v := newValidator(t)
	set := v.Validate([]Source{{Path: "p.yaml", Data: []byte("spec:\n  phases: {a: 1}\n  colour: blue\n")}})
	want := []string{
		`p.yaml:1:1: apiVersion: missing required field (expected "migrate.hal9.ai/v1")`,
		`p.yaml:1:1: kind: missing required field (expected "MigrationPlan")`,
		`p.yaml:1:1: metadata: missing required field (expected a mapping)`,
		`p.yaml:1:1: spec.driver: missing required field (expected a mapping)`,
		`p.yaml:1:1: spec.target: missing required field (expected a mapping)`,
		`p.yaml:2:3: spec.phases: invalid value (a mapping) (expected a list)`,
		`p.yaml:3:3: spec.colour: unknown field "colour" (expected one of target, driver, phases, guardrails, rollback, verify, features, sides, group, after, promotion)`,
	}
	var got []string
	for _, e := range set.Errors {
		got = append(got, e.Error())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// TestRulesBesideSchemaErrors: the rules that relate fields still run on a
// plan the schema rejected, so one run shows a misspelt target next to a bad
// step; a rule that would read a rejected value stays silent.
func TestRulesBesideSchemaErrors(t *testing.T) {
	base := readBase(t)
	v := newValidator(t)
	tests := []struct {
		name string
		subs []string // old, new, old, new, ...
		want []string
	}{
		{"misspelt target beside a bad soak and a bad name",
			[]string{"    phase: canary", "    phase: kanary", "soak: 2h", "soak: 2 hours", "- name: full", "- name: Full"},
			[]string{
				`p.yaml:7:12: spec.target.phase: unknown phase "kanary" (expected one of shadow, canary, migrate, Full)`,
				`p.yaml:20:13: spec.phases.1.soak: invalid value "2 hours" (expected a Go duration such as 90s, 5m or 24h)`,
				`p.yaml:26:13: spec.phases.3.name: invalid value "Full" (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, not "start" and not "previous-step")`,
			}},
		{"unknown rollback phase and check beside a bad feature",
			[]string{"to: previous-step", "to: canery", "verify: [integrity]", "verify: [integrty]", "onNoData: hold", "onNoData: wait"},
			[]string{
				`p.yaml:24:16: spec.phases.2.verify.0: unknown check "integrty" (expected one of "integrity")`,
				`p.yaml:38:9: spec.rollback.to: unknown phase "canery" (expected previous-step, start or one of shadow, canary, migrate, full)`,
				`p.yaml:39:15: spec.rollback.onNoData: invalid value "wait" (expected "hold", "rollback" or "ignore")`,
			}},
		{"a target percentage in a phase whose steps are rejected is not judged",
			[]string{"steps: [5, 10, 25]", "steps: [5, 10, 250]", "    percentage: 10", "    percentage: 30"},
			[]string{
				`p.yaml:19:22: spec.phases.1.steps.2: invalid value 250 (expected an integer > 0 and <= 100)`,
			}},
		{"traffic after a phase with no kind is not judged",
			[]string{"      steps: [5, 10, 25]\n", ""},
			[]string{
				`p.yaml:18:7: spec.phases.1: a phase needs one of steps, mirror or run`,
			}},
		{"mirroring without a router is not judged when the driver is rejected",
			[]string{"      traffic: {httpRoute: shop}\n", "", "    kubernetes:", "    docker: {stable: {service: a}, candidate: {service: b}}\n    kubernetes:"},
			[]string{
				`p.yaml:10:5: spec.driver.docker: only one driver is allowed (kubernetes is set too)`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := base
			for i := 0; i < len(tt.subs); i += 2 {
				if !strings.Contains(src, tt.subs[i]) {
					t.Fatalf("plan has no %q", tt.subs[i])
				}
				src = strings.Replace(src, tt.subs[i], tt.subs[i+1], 1)
			}
			wantErrors(t, v.Validate([]Source{{Path: "p.yaml", Data: []byte(src)}}), tt.want)
		})
	}
}

// TestDuplicateNameInBrokenFile: a broken plan still claims its name, so a
// second file with that name is reported in the same run, not after the
// first is fixed.
func TestDuplicateNameInBrokenFile(t *testing.T) {
	base := readBase(t)
	v := newValidator(t)
	set := v.Validate([]Source{
		{Path: "a.yaml", Data: []byte(strings.Replace(base, "soak: 2h", "soak: two hours", 1))},
		{Path: "b.yaml", Data: []byte(base)},
	})
	wantErrors(t, set, []string{
		`a.yaml:20:13: spec.phases.1.soak: invalid value "two hours" (expected a Go duration such as 90s, 5m or 24h)`,
		`b.yaml:4:9: metadata.name: duplicate plan name "base" (also used by a.yaml:4:9)`,
	})
}

func TestValidPlanInEveryFormat(t *testing.T) {
	v := newValidator(t)
	var plans []*Plan
	for _, f := range []string{"testdata/base.yaml", "testdata/base.json", "testdata/base.cue"} {
		p, err := v.ValidateOne(Source{Path: f, Data: mustRead(t, f)})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if p.File != f {
			t.Errorf("File = %q, want %q", p.File, f)
		}
		p.File, p.positions = "", nil
		plans = append(plans, p)
	}
	for i := 1; i < len(plans); i++ {
		if !reflect.DeepEqual(plans[0], plans[i]) {
			t.Errorf("plan %d differs from the YAML plan:\n%+v\n%+v", i, plans[i], plans[0])
		}
	}
	p := plans[0]
	if p.Spec.Phases[1].Soak.Std().Hours() != 2 || p.Spec.Phases[2].Run.Timeout.Std().Minutes() != 30 {
		t.Errorf("durations not decoded: %+v", p.Spec.Phases)
	}
	if *p.Spec.Guardrails[0].Max != 0.05 || p.Spec.Guardrails[1].Failures != 3 {
		t.Errorf("guardrails not decoded: %+v", p.Spec.Guardrails)
	}
}

func TestErrorPositionsInJSONAndCUE(t *testing.T) {
	v := newValidator(t)
	cases := []struct {
		file, old, new, want string
	}{
		{"p.json", `"soak": "2h"`, `"soak": "2 h"`,
			`p.json:38:17: spec.phases.1.soak: invalid value "2 h" (expected a Go duration such as 90s, 5m or 24h)`},
		{"p.json", `"percentage": 10`, `"percentage": 10, "extra": 1`,
			`p.json:10:25: spec.target.extra: unknown field "extra" (expected one of phase, percentage)`},
		{"p.cue", `soak:       "2h"`, `soak:       "2 h"`,
			`p.cue:21:15: spec.phases.1.soak: invalid value "2 h" (expected a Go duration such as 90s, 5m or 24h)`},
		{"p.cue", `percentage: 10`, `percentage: 10 & 11`,
			`p.cue:7:15: spec.target.percentage: conflicting values 11 and 10`},
		// A phase name left open fails inside the schema's helpers, which
		// name no field of the plan: the open value is named instead.
		{"p.cue", `name: "full"`, `name: string`,
			`p.cue:29:9: spec.phases.3.name: incomplete value string (expected a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, not "start" and not "previous-step")`},
	}
	for _, c := range cases {
		base := string(mustRead(t, "testdata/base"+filepath.Ext(c.file)))
		if !strings.Contains(base, c.old) {
			t.Fatalf("%s: no %q in base", c.file, c.old)
		}
		set := v.Validate([]Source{{Path: c.file, Data: []byte(strings.Replace(base, c.old, c.new, 1))}})
		if got := set.Errors.Error(); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.file, got, c.want)
		}
	}
}

func TestLoadDirectoryTree(t *testing.T) {
	dir := t.TempDir()
	base := readBase(t)
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", strings.Replace(base, "name: base", "name: alpha", 1))
	write("team/b.yml", strings.Replace(base, "name: base", "name: beta", 1))
	write("team/deep/c.yaml", strings.Replace(base, "name: base", "name: alpha", 1))
	write("status/alpha.yaml", "apiVersion: migrate.hal9.ai/v1\nkind: MigrationStatus\nphase: canary\n")
	write("kustomization.yaml", "kind: Kustomization\nresources: []\n")
	write(".hidden/x.yaml", "not: a plan\n")
	write("README.md", "# plans\n")

	v := newValidator(t)
	set, err := v.Load(dir)
	if err == nil {
		t.Fatal("duplicate names were accepted")
	}
	want := filepath.Join(dir, "team/deep/c.yaml") + ":4:9: metadata.name: duplicate plan name \"alpha\" (also used by " +
		filepath.Join(dir, "a.yaml") + ":4:9)"
	if err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	if len(set.Plans) != 1 || set.Plans[0].Metadata.Name != "beta" {
		t.Errorf("plans = %v, want only beta (both alphas dropped)", names(set.Plans))
	}
	if set.Files != 3 {
		t.Errorf("Files = %d, want 3 (status, kustomization, hidden and non-plan files skipped)", set.Files)
	}

	// A file named explicitly is always a plan, whatever its kind.
	_, err = v.Load(filepath.Join(dir, "kustomization.yaml"))
	if err == nil || !strings.Contains(err.Error(), `kind: invalid value "Kustomization" (expected "MigrationPlan")`) {
		t.Errorf("explicit non-plan file: %v", err)
	}
	_, err = v.Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.HasSuffix(err.Error(), "missing.yaml: cannot read: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}

func TestPlanLocate(t *testing.T) {
	v := newValidator(t)
	p, err := v.ValidateOne(Source{Path: "p.yaml", Data: []byte(readBase(t))})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][2]int{
		"spec.target.percentage": {8, 17},
		"spec.target":            {6, 3},
		"spec.target.missing":    {6, 3},
		"spec.phases.1.steps.2":  {14, 3}, // not remembered: the nearest enclosing field that is
		"spec.rollback.to":       {5, 1},
		"metadata.name":          {4, 9},
	} {
		if l, c := p.Locate(path); l != want[0] || c != want[1] {
			t.Errorf("Locate(%s) = %d:%d, want %d:%d", path, l, c, want[0], want[1])
		}
	}
}

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func names(ps []*Plan) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Metadata.Name)
	}
	return out
}

// TestExamplePlansAreValid keeps the plans users copy from valid.
func TestExamplePlansAreValid(t *testing.T) {
	set, err := newValidator(t).Load("../examples/plans")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"checkout", "cognitive", "docker-demo", "docker-replicas", "hal9-hierarchical", "protocol", "search-api", "substrate"}
	if got := names(set.Plans); !reflect.DeepEqual(got, want) {
		t.Errorf("example plans = %v, want %v", got, want)
	}
	// The HAL9 layers line up as one group, in the guide's 9 steps.
	if ls, errs := LineUp("hal9-layers", Groups(set.Plans)["hal9-layers"]); len(errs) > 0 || len(ls.Members) != 3 || len(ls.Steps) != 9 {
		t.Errorf("hal9-layers: %d members in %d steps, errors %v; want 3 members in 9 steps", len(ls.Members), len(ls.Steps), errs)
	}
	for _, p := range set.Plans {
		if p.Metadata.Name == "hal9-hierarchical" {
			e := Explain(p)
			if len(e.Steps) != 9 || e.Total.Std().Hours() != 192 {
				t.Errorf("hal9-hierarchical: %d steps, %v in all; want the guide's 9 steps over 8 days", len(e.Steps), e.Total)
			}
		}
	}
}
