package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
)

// probes answers pre-check's probes: HTTP checks with 200, queries with no
// data, and says whether a Prometheus is configured.
type probes struct {
	prometheus bool
	asked      []string
}

func (p *probes) Probe(_ context.Context, _ *plan.Plan, _ plan.Side, src plan.MetricSource) (float64, error) {
	if h := src.HTTP; h != nil {
		p.asked = append(p.asked, h.URL)
		return 200, nil
	}
	p.asked = append(p.asked, src.Prometheus.Query)
	return 0, errors.New("sum(rate(errors[1m])) returned no series: no data")
}

func (p *probes) Reachable(context.Context) (bool, error) { return p.prometheus, nil }

// TestPrecheckDeep: --deep probes every HTTP guardrail, with or without a
// Prometheus, under the http component; a query with no series is a warning
// that says how to make it return 0.
func TestPrecheckDeep(t *testing.T) {
	for _, withProm := range []bool{false, true} {
		r := newRig(t)
		r.steps(t, 1)
		p := &probes{prometheus: withProm}
		r.d.Prober = p
		items, err := r.d.Precheck(context.Background(), nil, true)
		if err != nil {
			t.Fatal(err)
		}
		var http, query *PrecheckItem
		for i, it := range items {
			switch it.Subject {
			case "guardrail health":
				http = &items[i]
			case "guardrail errors":
				query = &items[i]
			}
		}
		if http == nil || http.Component != "http" || http.Result != "ok" {
			t.Errorf("with Prometheus %v: the HTTP guardrail was not probed: %+v", withProm, items)
		}
		if query == nil || query.Result != "warning" || !strings.Contains(query.Message, "or vector(0)") {
			t.Errorf("with Prometheus %v: the query without series: %+v", withProm, query)
		}
		// Only the http component: no query runs.
		p.asked = nil
		if _, err := r.d.Precheck(context.Background(), []string{"http"}, true); err != nil {
			t.Fatal(err)
		}
		if len(p.asked) != 1 || p.asked[0] != "http://shop-v2/health" {
			t.Errorf("--components http probed %v", p.asked)
		}
	}
}

// TestPrecheckNamesTheCluster: pre-check says which cluster a Kubernetes
// plan's driver was opened on and its workloads answered from.
func TestPrecheckNamesTheCluster(t *testing.T) {
	for _, c := range []struct {
		driver         plan.Driver
		subject, where string
	}{
		{plan.Driver{Kubernetes: &plan.KubernetesDriver{Cluster: "b"}}, "kubernetes (cluster b)", " on cluster b"},
		{plan.Driver{Kubernetes: &plan.KubernetesDriver{}}, "kubernetes (default cluster)", " on the default cluster"},
		{plan.Driver{Docker: &plan.DockerDriver{}}, "docker", ""},
	} {
		if subject, where := driverWhere(c.driver); subject != c.subject || where != c.where {
			t.Errorf("%+v: %q, %q; want %q, %q", c.driver, subject, where, c.subject, c.where)
		}
	}
}
