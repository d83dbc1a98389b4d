package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// Prober measures a guardrail's or a check's source once, for pre-check
// --deep, for one side of p: a Prometheus query's value ($side filled in),
// an HTTP endpoint's status, the resources a side uses.
type Prober interface {
	Probe(ctx context.Context, p *plan.Plan, side plan.Side, src plan.MetricSource) (float64, error)
	// Reachable reports whether the metrics backend answers at all; an
	// error says why not, and nil with ok false says none is configured.
	Reachable(ctx context.Context) (ok bool, err error)
}

// Components pre-check knows: the daemon's own parts, then every kind of
// metric source the guardrails package registers.
var Components = append([]string{"git", "driver", "workloads"}, guardrails.Kinds()...)

// PrecheckItem is one thing pre-check tried.
type PrecheckItem struct {
	Component string `json:"component"`
	Plan      string `json:"plan,omitempty"`
	Subject   string `json:"subject"`
	// Result is ok, warning or failed.
	Result  string `json:"result"`
	Message string `json:"message"`
}

// Precheck reports whether the daemon can reach and drive everything its
// plans name: the repository, each plan's driver and workloads, and
// Prometheus; deep also runs every guardrail and check query once and
// warns of empty results. components limits it (nil: all).
func (d *Daemon) Precheck(ctx context.Context, components []string, deep bool) ([]PrecheckItem, error) {
	d.init()
	for _, c := range components {
		if !slices.Contains(Components, c) {
			return nil, fmt.Errorf("unknown component %q; the components are %s", c, strings.Join(Components, ", "))
		}
	}
	want := func(c string) bool { return len(components) == 0 || slices.Contains(components, c) }
	var out []PrecheckItem
	add := func(component, planName, subject string, err error, okMsg string) {
		it := PrecheckItem{Component: component, Plan: planName, Subject: subject, Result: "ok", Message: okMsg}
		if err != nil {
			it.Result, it.Message = "failed", err.Error()
		}
		out = append(out, it)
	}
	bounded := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return f(ctx)
	}

	if want("git") {
		var head string
		err := bounded(func(ctx context.Context) error {
			h, err := d.Git.Head(ctx)
			head = string(h)
			return err
		})
		add("git", "", "repository", err, "branch head at "+shorthash.Of(head))
		d.mu.Lock()
		for file, f := range d.invalid {
			out = append(out, PrecheckItem{Component: "git", Subject: file, Result: "failed",
				Message: "invalid at " + shorthash.Of(string(f.commit)) + ": " + f.errs.Error()})
		}
		d.mu.Unlock()
	}

	desired := d.snapshot()
	if want("driver") || want("workloads") {
		for _, ds := range desired {
			name := ds.Plan.Metadata.Name
			drv, err := d.Runner.Driver(ctx, ds)
			subject, where := driverWhere(ds.Plan.Spec.Driver)
			if want("driver") {
				add("driver", name, subject, err, "opened")
			}
			if err != nil {
				continue
			}
			var st drivers.State
			err = bounded(func(ctx context.Context) error {
				var err error
				st, err = drv.Observe(ctx)
				return err
			})
			if want("driver") {
				add("driver", name, "observe", err, "the workloads answer"+where)
			}
			if err != nil || !want("workloads") {
				continue
			}
			rec, lerr := d.Store.Load(ctx, name)
			if lerr != nil {
				add("workloads", name, "record", lerr, "")
				continue
			}
			add("workloads", name, "stable", stableProblem(st), fmt.Sprintf("%d/%d ready", st.StableReady, st.StableReplicas))
			add("workloads", name, "candidate", candidateProblem(st, !rec.Position.IsStart()), fmt.Sprintf("%d/%d ready", st.CandidateReady, st.CandidateReplicas))
		}
	}

	if want("prometheus") {
		uses := 0
		for _, ds := range desired {
			for _, g := range ds.Plan.Spec.Guardrails {
				if g.Prometheus != nil {
					uses++
				}
			}
		}
		switch {
		case d.Prober == nil:
			if uses > 0 {
				add("prometheus", "", "server", fmt.Errorf("%d guardrails query Prometheus, and no Prometheus is configured", uses), "")
			}
		default:
			var ok bool
			err := bounded(func(ctx context.Context) error {
				var err error
				ok, err = d.Prober.Reachable(ctx)
				return err
			})
			switch {
			case err != nil:
				add("prometheus", "", "server", err, "")
			case !ok && uses > 0:
				add("prometheus", "", "server", fmt.Errorf("%d guardrails query Prometheus, and no Prometheus is configured", uses), "")
			case ok:
				add("prometheus", "", "server", nil, "answers")
			}
		}
	}
	// --deep runs every query and HTTP check of every plan once: the
	// queries with the prometheus component, the HTTP checks with http.
	if deep && d.Prober != nil && (want("prometheus") || want("http")) {
		for _, ds := range desired {
			out = append(out, d.probeAll(ctx, ds, want)...)
		}
	}
	return out, nil
}

// driverWhere names a plan's driver for pre-check, with the cluster a
// Kubernetes plan is driven on (its subject), and says where its workloads
// answered from (to follow "the workloads answer").
func driverWhere(d plan.Driver) (subject, where string) {
	k := d.Kubernetes
	switch {
	case k == nil:
		return d.Name(), ""
	case k.Cluster != "":
		return "kubernetes (cluster " + k.Cluster + ")", " on cluster " + k.Cluster
	}
	return "kubernetes (default cluster)", " on the default cluster"
}

func stableProblem(s drivers.State) error {
	if !s.Decommissioned && s.StableReady == 0 {
		return fmt.Errorf("no stable replica is ready (%d wanted)", s.StableReplicas)
	}
	return nil
}

func candidateProblem(s drivers.State, started bool) error {
	if started && s.CandidateReady == 0 {
		return fmt.Errorf("the migration has started and no candidate replica is ready (%d wanted)", s.CandidateReplicas)
	}
	return nil
}

// probeAll runs each guardrail and check of a plan once, of the
// components wanted.
func (d *Daemon) probeAll(ctx context.Context, ds *reconcile.Desired, want func(string) bool) []PrecheckItem {
	var out []PrecheckItem
	name := ds.Plan.Metadata.Name
	probe := func(subject string, side plan.Side, src plan.MetricSource) {
		// A source's component is its kind.
		component := src.Kind()
		if component == "" || !want(component) {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		v, err := d.Prober.Probe(ctx, ds.Plan, side, src)
		it := PrecheckItem{Component: component, Plan: name, Subject: subject, Result: "ok", Message: "value " + reconcile.FormatValue(v)}
		if err != nil {
			it.Result, it.Message = "failed", err.Error()
			if strings.Contains(err.Error(), "no data") {
				it.Result = "warning"
				it.Message = "returns no data now: " + err.Error() + " (onNoData: " + ds.Plan.Spec.Rollback.NoData() + ")"
				if src.Prometheus != nil {
					it.Message += "; " + reconcile.NoSeriesHint
				}
			}
		}
		out = append(out, it)
	}
	for _, g := range ds.Plan.Spec.Guardrails {
		if g.Compare == nil {
			probe("guardrail "+g.Name, plan.Candidate, g.MetricSource)
			continue
		}
		// A comparison measures both sides: each must answer.
		for _, side := range []plan.Side{plan.Stable, plan.Candidate} {
			probe(fmt.Sprintf("guardrail %s (%s: %s)", g.Name, side, ds.Plan.SideValue(side)), side, g.MetricSource)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(ds.Plan.Spec.Verify)) {
		c := ds.Plan.Spec.Verify[n]
		probe("check "+n, plan.Candidate, c.MetricSource)
	}
	return out
}

// Verify runs named checks of a plan now (all of them when names is
// empty); found is false when no followed plan has that name.
func (d *Daemon) Verify(ctx context.Context, name string, names []string) ([]reconcile.Verification, bool, error) {
	d.init()
	for _, ds := range d.snapshot() {
		if ds.Plan.Metadata.Name != name {
			continue
		}
		if len(names) == 0 {
			for n := range ds.Plan.Spec.Verify {
				names = append(names, n)
			}
			slices.Sort(names)
		}
		vs, err := d.Runner.Verify(ctx, ds, names, time.Hour, time.Second)
		return vs, true, err
	}
	return nil, false, nil
}
