package metrics_test

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hal9ai/hal9-migrate/metrics"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

func loadPlan(t testing.TB) *plan.Plan {
	t.Helper()
	b, err := os.ReadFile("testdata/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.ValidateOne(plan.Source{Path: "plan.yaml", Data: b})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func record(phase string, pct int, status string) store.Record {
	return store.Record{Plan: "shop", Position: plan.Position{Phase: phase, Percentage: pct},
		Status: status, EnteredAt: t0}
}

// compare checks the exposition of the named metrics against want, given
// in the text format without HELP and TYPE lines: they are taken from the
// registry, so that the test is about the series.
func compare(t *testing.T, reg *prometheus.Registry, want string, names ...string) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		n := mf.GetName()
		fmt.Fprintf(&text, "# HELP %s %s\n# TYPE %s %s\n", n, mf.GetHelp(), n, strings.ToLower(mf.GetType().String()))
		for _, line := range strings.Split(want, "\n") {
			if line = strings.TrimSpace(line); strings.HasPrefix(line, n+"{") || strings.HasPrefix(line, n+" ") {
				text.WriteString(line + "\n")
			}
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(text.String()), names...); err != nil {
		t.Error(err)
	}
}

func TestPositionAndProgress(t *testing.T) {
	p := loadPlan(t)
	// The timeline: shadow 0, canary 5, 10, 25, migrate 25, full 100.
	tests := []struct {
		phase    string
		pct      int
		progress float64
		expected float64 // seconds
	}{
		{"", 0, 0, 0},
		{"shadow", 0, 1.0 / 6, 3600},
		{"canary", 10, 3.0 / 6, 7200},
		{"canary", 20, 3.0 / 6, 0}, // a target between two declared steps
		{"migrate", 25, 5.0 / 6, 2400},
		{"full", 100, 1, 0},
	}
	for _, tt := range tests {
		reg := prometheus.NewRegistry()
		m := metrics.New(reg)
		m.ObserveMigration(p, record(tt.phase, tt.pct, reconcile.StatusProgressing))
		phase := tt.phase
		if phase == "" {
			phase = "start"
		}
		compare(t, reg, `
hal9_migration_phase_info{phase="`+phase+`",plan="shop"} 1
hal9_migration_percentage{plan="shop"} `+itoa(tt.pct)+`
hal9_migration_progress{plan="shop"} `+ftoa(tt.progress)+`
hal9_migration_step_expected_seconds{plan="shop"} `+ftoa(tt.expected)+`
hal9_migration_step_entered_timestamp_seconds{plan="shop"} `+ftoa(float64(t0.Unix()))+`
`, "hal9_migration_phase_info", "hal9_migration_percentage", "hal9_migration_progress",
			"hal9_migration_step_expected_seconds", "hal9_migration_step_entered_timestamp_seconds")
		if t.Failed() {
			t.Fatalf("at %s %d", phase, tt.pct)
		}
	}
}

func itoa(i int) string     { return strconv.Itoa(i) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestPhaseChangeRemovesTheOldPhase(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveMigration(p, record("canary", 10, reconcile.StatusProgressing))
	m.ObserveMigration(p, record("migrate", 25, reconcile.StatusProgressing))
	compare(t, reg, `hal9_migration_phase_info{phase="migrate",plan="shop"} 1`, "hal9_migration_phase_info")
	if n, err := testutil.GatherAndCount(reg, "hal9_migration_phase_info"); err != nil || n != 1 {
		t.Errorf("phase_info has %d series after a phase change (%v), want 1", n, err)
	}
	// Rolled back to start: the phase is "start", alone.
	m.ObserveMigration(p, record("", 0, reconcile.StatusRolledBack))
	compare(t, reg, `hal9_migration_phase_info{phase="start",plan="shop"} 1`, "hal9_migration_phase_info")
}

func TestStatusIsOneHot(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveMigration(p, record("canary", 10, reconcile.StatusProgressing))
	m.ObserveMigration(p, record("canary", 5, reconcile.StatusRolledBack))
	compare(t, reg, `
hal9_migration_status{plan="shop",status="Breached"} 0
hal9_migration_status{plan="shop",status="Completed"} 0
hal9_migration_status{plan="shop",status="Frozen"} 0
hal9_migration_status{plan="shop",status="Holding"} 0
hal9_migration_status{plan="shop",status="Progressing"} 0
hal9_migration_status{plan="shop",status="RolledBack"} 1
hal9_migration_status{plan="shop",status="Waiting"} 0
`, "hal9_migration_status")
	// A status outside the known ones gets a series while it holds.
	m.ObserveMigration(p, record("canary", 5, "Failed"))
	m.ObserveMigration(p, record("canary", 5, reconcile.StatusHolding))
	compare(t, reg, `
hal9_migration_status{plan="shop",status="Breached"} 0
hal9_migration_status{plan="shop",status="Completed"} 0
hal9_migration_status{plan="shop",status="Frozen"} 0
hal9_migration_status{plan="shop",status="Holding"} 1
hal9_migration_status{plan="shop",status="Progressing"} 0
hal9_migration_status{plan="shop",status="RolledBack"} 0
hal9_migration_status{plan="shop",status="Waiting"} 0
`, "hal9_migration_status")
}

func TestGuardrails(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveMigration(p, record("canary", 10, reconcile.StatusProgressing))
	compare(t, reg, `
hal9_guardrail_bound{bound="max",guardrail="error-rate",plan="shop"} 0.05
hal9_guardrail_bound{bound="min",guardrail="throughput",plan="shop"} 1
`, "hal9_guardrail_bound")

	m.ObserveGuardrails("shop", []reconcile.Reading{
		{Name: "error-rate", Health: reconcile.Pending, Value: 0.07},
		{Name: "health", Health: reconcile.Healthy, Value: 0},
		{Name: "throughput", Health: reconcile.Healthy, Value: 12},
	})
	m.ObserveGuardrails("shop", []reconcile.Reading{
		{Name: "error-rate", Health: reconcile.Breached, Value: 0.09},
		{Name: "throughput", Health: reconcile.NoData},
	})
	compare(t, reg, `
hal9_guardrail_value{guardrail="error-rate",plan="shop",side="candidate"} 0.09
hal9_guardrail_state{guardrail="error-rate",plan="shop",state="Breached"} 1
hal9_guardrail_state{guardrail="error-rate",plan="shop",state="Error"} 0
hal9_guardrail_state{guardrail="error-rate",plan="shop",state="Healthy"} 0
hal9_guardrail_state{guardrail="error-rate",plan="shop",state="Measuring"} 0
hal9_guardrail_state{guardrail="error-rate",plan="shop",state="NoData"} 0
hal9_guardrail_state{guardrail="error-rate",plan="shop",state="Pending"} 0
hal9_guardrail_state{guardrail="throughput",plan="shop",state="Breached"} 0
hal9_guardrail_state{guardrail="throughput",plan="shop",state="Error"} 0
hal9_guardrail_state{guardrail="throughput",plan="shop",state="Healthy"} 0
hal9_guardrail_state{guardrail="throughput",plan="shop",state="Measuring"} 0
hal9_guardrail_state{guardrail="throughput",plan="shop",state="NoData"} 1
hal9_guardrail_state{guardrail="throughput",plan="shop",state="Pending"} 0
`, "hal9_guardrail_value", "hal9_guardrail_state")
}

func TestConditions(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveMigration(p, record("canary", 5, reconcile.StatusRolledBack))
	m.SetConditions("shop", []string{"RollbackNotCommitted", "Unheard"})
	compare(t, reg, `
hal9_migration_condition{condition="ChangeNotSigned",plan="shop"} 0
hal9_migration_condition{condition="PlanInvalid",plan="shop"} 0
hal9_migration_condition{condition="RollbackNotCommitted",plan="shop"} 1
hal9_migration_condition{condition="Unheard",plan="shop"} 1
`, "hal9_migration_condition")
	m.SetConditions("shop", nil)
	compare(t, reg, `
hal9_migration_condition{condition="ChangeNotSigned",plan="shop"} 0
hal9_migration_condition{condition="PlanInvalid",plan="shop"} 0
hal9_migration_condition{condition="RollbackNotCommitted",plan="shop"} 0
`, "hal9_migration_condition")
}

func TestRollbacksAndDurations(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveMigration(p, record("canary", 10, reconcile.StatusProgressing))
	compare(t, reg, `hal9_rollbacks_total{plan="shop"} 0`, "hal9_rollbacks_total")
	m.RolledBack("shop")
	m.RolledBack("shop")
	compare(t, reg, `hal9_rollbacks_total{plan="shop"} 2`, "hal9_rollbacks_total")

	m.ReconcileDone(30 * time.Millisecond)
	m.GitSynced(time.Now(), 200*time.Millisecond, nil)
	m.GitSynced(time.Now(), 3*time.Second, errors.New("connection refused"))
	m.GitSynced(time.Now(), 4*time.Second, errors.New("connection refused"))
	if n, err := testutil.GatherAndCount(reg, "hal9_reconcile_duration_seconds"); err != nil || n != 1 {
		t.Errorf("reconcile histogram: %d series, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	sums := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "hal9_git_sync_duration_seconds" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			r := mm.GetLabel()[0].GetValue()
			counts[r], sums[r] = mm.GetHistogram().GetSampleCount(), mm.GetHistogram().GetSampleSum()
		}
	}
	if counts["ok"] != 1 || counts["error"] != 2 || sums["error"] != 7 || sums["ok"] != 0.2 {
		t.Errorf("git sync histogram: counts %v sums %v, want ok 1 (0.2s), error 2 (7s)", counts, sums)
	}
}

func TestForgetDeletesEveryPlanSeries(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveMigration(p, record("canary", 10, reconcile.StatusProgressing))
	m.ObserveGuardrails("shop", []reconcile.Reading{{Name: "error-rate", Health: reconcile.Healthy, Value: 0.01}})
	m.SetConditions("shop", []string{"PlanInvalid"})
	m.RolledBack("shop")
	other := *p
	other.Metadata.Name = "search"
	m.ObserveMigration(&other, store.Record{Plan: "search", Position: plan.Position{Phase: "shadow"}, Status: reconcile.StatusProgressing})

	m.Forget("shop")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "plan" {
					if l.GetValue() == "shop" {
						t.Errorf("%s keeps a series of a forgotten plan: %v", mf.GetName(), mm.GetLabel())
					} else {
						left++
					}
				}
			}
		}
	}
	if left == 0 {
		t.Error("forgetting one plan removed the other's series too")
	}
	// A plan seen again after being forgotten starts afresh.
	m.ObserveMigration(p, record("full", 100, reconcile.StatusCompleted))
	compare(t, reg, `hal9_migration_phase_info{phase="full",plan="shop"} 1
hal9_migration_phase_info{phase="shadow",plan="search"} 1`, "hal9_migration_phase_info")
}

func TestNewRegistersOnTheGivenRegistryOnly(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	metrics.New(prometheus.NewRegistry()) // a second daemon in one process
	defer func() {
		if recover() == nil {
			t.Error("registering twice on one registry did not panic")
		}
	}()
	metrics.New(reg)
}

// TestConcurrentUse reports from several goroutines while scraping, as the
// runner's workers do; run with -race it shows the methods are safe.
func TestConcurrentUse(t *testing.T) {
	p := loadPlan(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				phase := []string{"shadow", "canary", "full"}[(i+w)%3]
				m.ObserveMigration(p, record(phase, 10, reconcile.StatusProgressing))
				m.ObserveGuardrails("shop", []reconcile.Reading{{Name: "error-rate", Health: stateOf(i), Value: float64(i)}})
				m.SetConditions("shop", conditionsOf(i))
				m.RolledBack("shop")
				if i%50 == 0 {
					m.Forget("shop")
				}
			}
		}()
	}
	for range 20 {
		if _, err := reg.Gather(); err != nil {
			t.Error(err)
		}
	}
	for range 4 {
		<-done
	}
	// Whatever the interleaving, one phase holds at the end.
	m.ObserveMigration(p, record("full", 100, reconcile.StatusCompleted))
	if n, err := testutil.GatherAndCount(reg, "hal9_migration_phase_info"); err != nil || n != 1 {
		t.Errorf("phase_info has %d series (%v), want 1", n, err)
	}
}

func stateOf(i int) reconcile.Health { return metrics.States[i%len(metrics.States)] }

func conditionsOf(i int) []string { return metrics.Conditions[:i%(len(metrics.Conditions)+1)] }
