// Package metrics is the daemon's own Prometheus metrics: where every
// migration is, how its guardrails read, how often it rolled back, and how
// long reconciling and syncing Git take. The alert rules in
// deploy/prometheus and the dashboards in deploy/grafana are written
// against these names, and the package's tests check that they only use
// names that exist.
//
// The package only reports what it is told: the daemon calls its methods
// after each sync, each cycle and each decision. It registers its
// collectors on the registry it is given, never on the global one.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// Statuses are the values hal9_migration_status always has a series for, so
// that a query for one of them finds a 0 rather than nothing. A record with
// another status gets a series of its own as well.
var Statuses = []string{
	reconcile.StatusProgressing, reconcile.StatusHolding, reconcile.StatusWaiting,
	reconcile.StatusRolledBack, reconcile.StatusFrozen, reconcile.StatusBreached,
	reconcile.StatusCompleted,
}

// States are the values hal9_guardrail_state always has a series for.
var States = []reconcile.Health{
	reconcile.Healthy, reconcile.Pending, reconcile.Breached, reconcile.NoData, reconcile.Error, reconcile.Measuring,
}

// Conditions are the values hal9_migration_condition always has a series
// for: the problems a status file reports (see daemon.Condition).
var Conditions = []string{"PlanInvalid", "RollbackNotCommitted", "ChangeNotSigned"}

// StartPhase is the phase label of a migration at Start, before its first
// phase: a name no phase may take.
const StartPhase = plan.RollbackStart

// Metrics holds the daemon's collectors. Its methods are safe for
// concurrent use: the runner reports decisions from its workers.
type Metrics struct {
	phase      *prometheus.GaugeVec
	percentage *prometheus.GaugeVec
	progress   *prometheus.GaugeVec
	status     *prometheus.GaugeVec
	entered    *prometheus.GaugeVec
	expected   *prometheus.GaugeVec
	condition  *prometheus.GaugeVec
	bound      *prometheus.GaugeVec
	value      *prometheus.GaugeVec
	pvalue     *prometheus.GaugeVec
	state      *prometheus.GaugeVec
	rollbacks  *prometheus.CounterVec
	reconcile  prometheus.Histogram
	gitSync    *prometheus.HistogramVec
	lastCycle  prometheus.Gauge
	loopLag    prometheus.Gauge
	lastSync   prometheus.Gauge

	mu    sync.Mutex
	plans map[string]*seen
}

// seen is what a plan's series were last set to, so that the ones that no
// longer hold are deleted rather than left at their last value.
type seen struct {
	plan       *plan.Plan // the version the timeline below was worked out for
	timeline   []plan.Step
	phase      string
	status     string             // an extra status outside Statuses, if any
	bounds     map[[2]string]bool // guardrail, "max"|"min"
	guardrails map[string]bool    // guardrails with a state
	values     map[[2]string]bool // guardrail, side with a value
	pvalues    map[string]bool    // guardrails with a p-value
	extra      map[[2]string]bool // guardrail, state outside States
	conditions map[string]bool    // conditions outside Conditions
}

// New creates the collectors and registers them on reg. It panics if a
// collector of the same name is registered there already, as
// prometheus.MustRegister does: that is a wiring mistake.
func New(reg prometheus.Registerer) *Metrics {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		phase: gauge("hal9_migration_phase_info",
			"The phase a migration is in: 1 for the current phase, which is \"start\" before the first; no series for the others.", "plan", "phase"),
		percentage: gauge("hal9_migration_percentage",
			"The share of live traffic, 0..100, the candidate receives at the migration's position.", "plan"),
		progress: gauge("hal9_migration_progress",
			"How far the migration is along its plan's whole timeline, 0..1: the steps reached over the steps there are.", "plan"),
		status: gauge("hal9_migration_status",
			"The migration's status: 1 for the current one, 0 for the others.", "plan", "status"),
		entered: gauge("hal9_migration_step_entered_timestamp_seconds",
			"When the migration entered its current position, in Unix seconds.", "plan"),
		expected: gauge("hal9_migration_step_expected_seconds",
			"How long the current step is expected to last at most when all goes well: its soak plus, for a run step, its job's timeout.", "plan"),
		condition: gauge("hal9_migration_condition",
			"A problem the migration's status reports (PlanInvalid, RollbackNotCommitted, ChangeNotSigned): 1 while it stands.", "plan", "condition"),
		bound: gauge("hal9_guardrail_bound",
			"A guardrail's bound from the plan: bound=\"max\" is the most it may read, bound=\"min\" the least.", "plan", "guardrail", "bound"),
		value: gauge("hal9_guardrail_value",
			"A guardrail's last value, by side: the candidate's, and stable's too for a guardrail that compares them; no series while it has no data or its query failed.", "plan", "guardrail", "side"),
		pvalue: gauge("hal9_guardrail_p_value",
			"The p-value of a guardrail's last statistical test that the candidate is worse than stable.", "plan", "guardrail"),
		state: gauge("hal9_guardrail_state",
			"A guardrail's state (Healthy, Pending, Breached, NoData, Error, Measuring: not measured since the last move): 1 for the current one, 0 for the others.", "plan", "guardrail", "state"),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hal9_rollbacks_total",
			Help: "Automatic rollbacks applied to the workloads.",
		}, []string{"plan"}),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hal9_reconcile_duration_seconds",
			Help:    "Time one reconcile cycle over every plan took.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		gitSync: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hal9_git_sync_duration_seconds",
			Help:    "Time one sync of the plan repository took, by result (ok or error).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"result"}),
		lastCycle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hal9_safety_loop_last_cycle_timestamp_seconds",
			Help: "When the safety loop (guardrails, decisions, driver) last finished a cycle, in Unix seconds: time() minus it is how long no plan has been guarded.",
		}),
		loopLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hal9_safety_loop_lag_seconds",
			Help: "How long after it was due the safety loop's last cycle finished: the time a breach waits on the loop itself.",
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "hal9_git_last_sync_timestamp_seconds",
			Help: "When the plan repository was last read successfully, in Unix seconds: time() minus it is how stale the plans are (the safety loop goes on with the last good ones).",
		}),
		plans: map[string]*seen{},
	}
	reg.MustRegister(m.phase, m.percentage, m.progress, m.status, m.entered, m.expected,
		m.condition, m.bound, m.value, m.pvalue, m.state, m.rollbacks, m.reconcile, m.gitSync,
		m.lastCycle, m.loopLag, m.lastSync)
	// Both results exist from the start, so that a rate of errors is 0
	// rather than nothing until the first failure.
	m.gitSync.WithLabelValues("ok")
	m.gitSync.WithLabelValues("error")
	return m
}

func (m *Metrics) seen(name string) *seen {
	s, ok := m.plans[name]
	if !ok {
		s = &seen{bounds: map[[2]string]bool{}, guardrails: map[string]bool{}, values: map[[2]string]bool{}, pvalues: map[string]bool{},
			extra: map[[2]string]bool{}, conditions: map[string]bool{}}
		m.plans[name] = s
	}
	return s
}

// ObserveMigration sets the position, progress, status and guardrail bounds
// of p's migration from its record. Call it after every cycle with the
// record as saved.
func (m *Metrics) ObserveMigration(p *plan.Plan, rec store.Record) {
	name := p.Metadata.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.seen(name)
	if s.plan != p {
		s.plan, s.timeline = p, p.Timeline(plan.Last)
	}

	phase := rec.Position.Phase
	if rec.Position.IsStart() {
		phase = StartPhase
	}
	if s.phase != "" && s.phase != phase {
		m.phase.DeleteLabelValues(name, s.phase)
	}
	s.phase = phase
	m.phase.WithLabelValues(name, phase).Set(1)
	m.percentage.WithLabelValues(name).Set(float64(rec.Position.Percentage))

	// The steps reached: those at or before the position. A percentage
	// between two declared steps (a target that caps a phase) counts the
	// steps below it.
	reached, expected := 0, time.Duration(0)
	if !rec.Position.IsStart() {
		for _, st := range s.timeline {
			if p.Compare(st.Position, rec.Position) > 0 {
				break
			}
			reached++
			if st.Position == rec.Position {
				expected = st.Soak.Std()
				if st.Run != nil {
					expected += st.Run.Timeout.Std()
				}
			}
		}
	}
	progress := 0.0
	if len(s.timeline) > 0 {
		progress = float64(reached) / float64(len(s.timeline))
	}
	m.progress.WithLabelValues(name).Set(progress)
	m.expected.WithLabelValues(name).Set(expected.Seconds())
	if rec.EnteredAt.IsZero() {
		m.entered.DeleteLabelValues(name)
	} else {
		m.entered.WithLabelValues(name).Set(float64(rec.EnteredAt.UnixNano()) / 1e9)
	}

	known := false
	for _, st := range Statuses {
		v := 0.0
		if st == rec.Status {
			v, known = 1, true
		}
		m.status.WithLabelValues(name, st).Set(v)
	}
	if s.status != "" && s.status != rec.Status {
		m.status.DeleteLabelValues(name, s.status)
		s.status = ""
	}
	if !known && rec.Status != "" {
		s.status = rec.Status
		m.status.WithLabelValues(name, rec.Status).Set(1)
	}

	bounds := map[[2]string]bool{}
	for _, g := range p.Spec.Guardrails {
		if g.Max != nil {
			bounds[[2]string{g.Name, "max"}] = true
			m.bound.WithLabelValues(name, g.Name, "max").Set(*g.Max)
		}
		if g.Min != nil {
			bounds[[2]string{g.Name, "min"}] = true
			m.bound.WithLabelValues(name, g.Name, "min").Set(*g.Min)
		}
	}
	for b := range s.bounds {
		if !bounds[b] {
			m.bound.DeleteLabelValues(name, b[0], b[1])
		}
	}
	s.bounds = bounds

	// A plan seen for the first time starts counting rollbacks at 0, so
	// that increase() sees its first one.
	m.rollbacks.WithLabelValues(name)
	for _, c := range Conditions {
		m.condition.WithLabelValues(name, c)
	}
}

// ObserveGuardrails sets the values and states of a plan's guardrails from
// their latest readings. A guardrail missing from readings (removed from
// the plan, or not evaluated at a position without traffic) loses its
// series.
func (m *Metrics) ObserveGuardrails(planName string, readings []reconcile.Reading) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.seen(planName)
	guardrails, values, pvalues, extra := map[string]bool{}, map[[2]string]bool{}, map[string]bool{}, map[[2]string]bool{}
	for _, r := range readings {
		guardrails[r.Name] = true
		known := false
		for _, st := range States {
			v := 0.0
			if st == r.Health {
				v, known = 1, true
			}
			m.state.WithLabelValues(planName, r.Name, string(st)).Set(v)
		}
		if !known {
			extra[[2]string{r.Name, string(r.Health)}] = true
			m.state.WithLabelValues(planName, r.Name, string(r.Health)).Set(1)
		}
		// A value read while there was no data or the query failed is
		// not a reading: leave a gap rather than a misleading 0.
		if r.Health == reconcile.NoData || r.Health == reconcile.Error || r.Health == reconcile.Measuring {
			continue
		}
		values[[2]string{r.Name, "candidate"}] = true
		m.value.WithLabelValues(planName, r.Name, "candidate").Set(r.Value)
		if c := r.Compare; c != nil {
			values[[2]string{r.Name, "stable"}] = true
			m.value.WithLabelValues(planName, r.Name, "stable").Set(c.Stable)
			if c.PValue != nil {
				pvalues[r.Name] = true
				m.pvalue.WithLabelValues(planName, r.Name).Set(*c.PValue)
			}
		}
	}
	for g := range s.guardrails {
		if !guardrails[g] {
			for _, st := range States {
				m.state.DeleteLabelValues(planName, g, string(st))
			}
		}
	}
	for e := range s.extra {
		if !extra[e] {
			m.state.DeleteLabelValues(planName, e[0], e[1])
		}
	}
	for v := range s.values {
		if !values[v] {
			m.value.DeleteLabelValues(planName, v[0], v[1])
		}
	}
	for g := range s.pvalues {
		if !pvalues[g] {
			m.pvalue.DeleteLabelValues(planName, g)
		}
	}
	s.guardrails, s.values, s.pvalues, s.extra = guardrails, values, pvalues, extra
}

// SetConditions sets the problems a plan's status reports now, by type
// (see Conditions); the ones not named are cleared.
func (m *Metrics) SetConditions(planName string, types []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.seen(planName)
	now := map[string]bool{}
	for _, t := range types {
		now[t] = true
	}
	for _, c := range Conditions {
		v := 0.0
		if now[c] {
			v = 1
			delete(now, c)
		}
		m.condition.WithLabelValues(planName, c).Set(v)
	}
	for c := range s.conditions {
		if !now[c] {
			m.condition.DeleteLabelValues(planName, c)
		}
	}
	for c := range now {
		m.condition.WithLabelValues(planName, c).Set(1)
	}
	s.conditions = now
}

// RolledBack counts an automatic rollback of a plan, once it has been
// applied to the workloads.
func (m *Metrics) RolledBack(planName string) {
	m.rollbacks.WithLabelValues(planName).Inc()
}

// ReconcileDone records how long one cycle over every plan took.
func (m *Metrics) ReconcileDone(took time.Duration) {
	m.reconcile.Observe(took.Seconds())
}

// GitSynced records how long one sync of the plan repository took, ending
// at, and whether it failed.
func (m *Metrics) GitSynced(at time.Time, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		m.lastSync.Set(float64(at.UnixNano()) / 1e9)
	}
	m.gitSync.WithLabelValues(result).Observe(took.Seconds())
}

// SafetyCycle records a cycle of the safety loop that finished at at, lag
// after it was due.
func (m *Metrics) SafetyCycle(at time.Time, lag time.Duration) {
	m.lastCycle.Set(float64(at.UnixNano()) / 1e9)
	m.loopLag.Set(lag.Seconds())
}

// Forget deletes every series of a plan the daemon no longer follows, so
// that dashboards and alerts do not go on showing its last values.
func (m *Metrics) Forget(planName string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.plans, planName)
	l := prometheus.Labels{"plan": planName}
	for _, v := range []*prometheus.MetricVec{m.phase.MetricVec, m.percentage.MetricVec, m.progress.MetricVec,
		m.status.MetricVec, m.entered.MetricVec, m.expected.MetricVec, m.condition.MetricVec, m.bound.MetricVec,
		m.value.MetricVec, m.pvalue.MetricVec, m.state.MetricVec, m.rollbacks.MetricVec} {
		v.DeletePartialMatch(l)
	}
}

// NewShardsHeld registers, on reg, the gauge of the shards this replica
// holds when replicas share the plans (kubernetes.sharding); a daemon
// that does not shard has no such series.
func NewShardsHeld(reg prometheus.Registerer) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hal9_shards_held",
		Help: "How many shards of the plans this replica holds and steps (kubernetes.sharding); the sum over the replicas is the number of shards once they have settled.",
	})
	reg.MustRegister(g)
	return g
}
