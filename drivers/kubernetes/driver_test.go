package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func converge(t *testing.T, d *Driver, target drivers.Target) drivers.State {
	t.Helper()
	if err := d.Apply(ctxT(t), target); err != nil {
		t.Fatalf("Apply(%+v): %v", target, err)
	}
	st, err := drivertest.Converge(t.Context(), d, target, d.Tolerance(), 30*time.Second, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestReplicaRatio walks a plan without a route: the candidate's share is
// its share of the ready replicas, the total stays at the capacity, and
// the tolerance is what ten replicas allow.
func TestReplicaRatio(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 10})
	d := f.driver(t)
	if _, err := d.Observe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := d.Tolerance(); got != 9 {
		t.Errorf("Tolerance with 10 replicas = %d, want 9", got)
	}
	for _, tc := range []struct {
		target            drivers.Target
		stable, candidate int
		traffic           int
		decommissioned    bool
	}{
		{drivers.Target{}, 10, 0, 0, false},
		{drivers.Target{Traffic: 5}, 9, 1, 10, false},
		{drivers.Target{Traffic: 25}, 7, 3, 30, false},
		{drivers.Target{Traffic: 50}, 5, 5, 50, false},
		{drivers.Target{Traffic: 100}, 0, 10, 100, false},
		{drivers.Target{Traffic: 10}, 9, 1, 10, false},
		{drivers.Target{Traffic: 100}, 0, 10, 100, false},
		{drivers.Target{Traffic: 100, Decommission: true}, 0, 10, 100, true},
	} {
		st := converge(t, d, tc.target)
		if st.StableReplicas != tc.stable || st.CandidateReplicas != tc.candidate || st.Traffic != tc.traffic || st.Decommissioned != tc.decommissioned {
			t.Errorf("after Apply(%+v): %+v; want stable %d, candidate %d, traffic %d%%, decommissioned %t",
				tc.target, st, tc.stable, tc.candidate, tc.traffic, tc.decommissioned)
		}
	}
	if err := d.Apply(ctxT(t), drivers.Target{Mirror: 10}); err == nil || !strings.Contains(err.Error(), "HTTPRoute") {
		t.Errorf("mirroring without a route: %v, want an error saying it needs an HTTPRoute", err)
	}
	if err := d.Apply(ctxT(t), drivers.Target{Traffic: 50, Decommission: true}); err == nil {
		t.Error("decommissioning at 50% was accepted")
	}
}

// TestRatioSharesReadyReplicas checks the report is of ready replicas: a
// candidate whose pods are not ready takes no traffic, whatever was asked.
func TestRatioSharesReadyReplicas(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4})
	d := f.driver(t)
	// Pods of a node that does not exist stay Pending: never ready.
	patch := `{"spec":{"template":{"spec":{"nodeSelector":{"no-such-node":"true"}}}}}`
	if _, err := f.kube.AppsV1().Deployments(f.ns).Patch(ctxT(t), candidateName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctxT(t), drivers.Target{Traffic: 50}); err != nil {
		t.Fatal(err)
	}
	f.waitReady(t, stableName, 2)
	st, err := d.Observe(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.CandidateReplicas != 2 || st.CandidateReady != 0 || st.Traffic != 0 {
		t.Errorf("Observe = %+v; want the candidate at 2 replicas, none ready, 0%% of traffic", st)
	}
}

// TestRouteServerSideApply checks the route is written by server-side
// apply under the field manager hal9-migrate, which owns the rules and
// nothing else the user wrote.
func TestRouteServerSideApply(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	d := f.driver(t)
	converge(t, d, drivers.Target{Mirror: 50})
	r := f.route(t)
	rule := r.Spec.Rules[0]
	if len(rule.BackendRefs) != 2 || *rule.BackendRefs[0].Weight != 100 || *rule.BackendRefs[1].Weight != 0 ||
		rule.BackendRefs[1].Name != candidateName || *rule.BackendRefs[1].Port != 80 {
		t.Errorf("backends = %+v", rule.BackendRefs)
	}
	if len(rule.Filters) != 1 || rule.Filters[0].Type != gatewayv1.HTTPRouteFilterRequestMirror ||
		rule.Filters[0].RequestMirror.BackendRef.Name != candidateName || *rule.Filters[0].RequestMirror.Percent != 50 {
		t.Errorf("filters = %+v", rule.Filters)
	}
	converge(t, d, drivers.Target{Traffic: 25})
	r = f.route(t)
	rule = r.Spec.Rules[0]
	if *rule.BackendRefs[0].Weight != 75 || *rule.BackendRefs[1].Weight != 25 || len(rule.Filters) != 0 {
		t.Errorf("at 25%%: %+v", rule)
	}
	owners := specOwners(r.ManagedFields)
	if !slices.Contains(owners["f:rules"], FieldManager+"/Apply") {
		t.Errorf("spec.rules is owned by %v, want %s/Apply among them", owners["f:rules"], FieldManager)
	}
	for _, k := range []string{"f:parentRefs", "f:hostnames"} {
		if slices.Contains(owners[k], FieldManager+"/Apply") || len(owners[k]) == 0 {
			t.Errorf("spec.%s is owned by %v, want the user's manager only", k, owners[k])
		}
	}
	if len(r.Spec.ParentRefs) != 1 || len(r.Spec.Hostnames) != 1 {
		t.Errorf("the user's fields changed: %+v", r.Spec)
	}
	dep, err := f.kube.AppsV1().Deployments(f.ns).Get(ctxT(t), candidateName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	applied := false
	for _, m := range dep.ManagedFields {
		if m.Manager == FieldManager && m.Operation == metav1.ManagedFieldsOperationApply && strings.Contains(string(m.FieldsV1.Raw), `"f:replicas"`) {
			applied = true
		}
	}
	if !applied {
		t.Errorf("the candidate's replicas are not applied by %s: %+v", FieldManager, dep.ManagedFields)
	}
}

// specOwners lists the managers of each field of an object's spec, with
// their operations ("hal9-migrate/Apply"), by field ("f:rules").
func specOwners(managed []metav1.ManagedFieldsEntry) map[string][]string {
	owners := map[string][]string{}
	for _, m := range managed {
		var fields map[string]any
		_ = json.Unmarshal(m.FieldsV1.Raw, &fields)
		spec, _ := fields["f:spec"].(map[string]any)
		for k := range spec {
			owners[k] = append(owners[k], m.Manager+"/"+string(m.Operation))
		}
	}
	return owners
}

// TestRouteDrift edits the route behind the driver's back: Observe reports
// what the route says, and Apply repairs it.
func TestRouteDrift(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	d := f.driver(t)
	converge(t, d, drivers.Target{Traffic: 10})
	r := f.route(t)
	r.Spec.Rules[0].BackendRefs[1].Weight = ptr(int32(40))
	r.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(60))
	if _, err := f.gw.GatewayV1().HTTPRoutes(f.ns).Update(ctxT(t), r, metav1.UpdateOptions{FieldManager: "someone"}); err != nil {
		t.Fatal(err)
	}
	st, err := d.Observe(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Traffic != 40 {
		t.Errorf("after a hand edit to 40%%, Observe reports %d%%", st.Traffic)
	}
	converge(t, d, drivers.Target{Traffic: 10})
}

// TestEvents checks every Apply leaves an Event on both Deployments.
func TestEvents(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	d := f.driver(t, WithInstance("replica-0"))
	converge(t, d, drivers.Target{Mirror: 100})
	converge(t, d, drivers.Target{Traffic: 20})
	for _, name := range []string{stableName, candidateName} {
		evs, err := f.kube.CoreV1().Events(f.ns).List(ctxT(t), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Deployment,involvedObject.name=" + name,
		})
		if err != nil {
			t.Fatal(err)
		}
		var reasons []string
		for _, e := range evs.Items {
			if e.Source.Component != FieldManager {
				continue
			}
			reasons = append(reasons, e.Reason)
			if !strings.Contains(e.Message, "plan app") || e.ReportingInstance != "replica-0" {
				t.Errorf("event %s: %q from %q", e.Reason, e.Message, e.ReportingInstance)
			}
		}
		slices.Sort(reasons)
		if want := []string{ReasonMirroring, ReasonTrafficShifted}; !slices.Equal(reasons, want) {
			t.Errorf("events on %s: %v, want %v", name, reasons, want)
		}
	}
}

// TestFlagsConfigMap checks the ConfigMap an application mounts: flagd's
// format under flags.flagd.json, labelled with the plan.
func TestFlagsConfigMap(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	d := f.driver(t)
	if err := d.PublishFlags(ctxT(t), map[string]int{"new_path": 20}); err != nil {
		t.Fatal(err)
	}
	cm, err := f.kube.CoreV1().ConfigMaps(f.ns).Get(ctxT(t), "app-flags", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels[LabelPlan] != "app" {
		t.Errorf("labels = %v", cm.Labels)
	}
	var defs struct {
		Flags map[string]struct {
			Targeting struct {
				Fractional [][]any `json:"fractional"`
			} `json:"targeting"`
		} `json:"flags"`
	}
	if err := json.Unmarshal([]byte(cm.Data[FlagsKey]), &defs); err != nil {
		t.Fatalf("%s: %v\n%s", FlagsKey, err, cm.Data[FlagsKey])
	}
	if fr := defs.Flags["new_path"].Targeting.Fractional; len(fr) != 2 || fr[0][0] != "on" || fr[0][1] != 20.0 {
		t.Errorf("new_path targeting = %v", fr)
	}
}

// TestJobTimeout runs a job past its timeout: Kubernetes stops it
// (activeDeadlineSeconds) and the driver reports it done, failed, timed out.
func TestJobTimeout(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	d := f.driver(t)
	run := slowJob
	run.Timeout = plan.Duration(2 * time.Second)
	if err := d.StartJob(ctxT(t), "slow-1", run); err != nil {
		t.Fatal(err)
	}
	j, err := f.kube.BatchV1().Jobs(f.ns).Get(ctxT(t), "slow-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.ActiveDeadlineSeconds == nil || *j.Spec.ActiveDeadlineSeconds != 2 || *j.Spec.BackoffLimit != 0 {
		t.Errorf("job spec: deadline %v, backoff limit %v", j.Spec.ActiveDeadlineSeconds, j.Spec.BackoffLimit)
	}
	var st drivers.JobStatus
	err = drivertest.WaitFor(t.Context(), time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err = d.JobStatus(ctx, "slow-1")
		return st.Done, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Succeeded || st.ExitCode != ExitUnknown || !strings.Contains(st.Message, "timed out after 2s") {
		t.Errorf("JobStatus = %+v; want failed, exit code %d, timed out after 2s", st, ExitUnknown)
	}
}

// TestJobIDsThatAreNotNames starts jobs whose ids are no Kubernetes names.
func TestJobIDsThatAreNotNames(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	d := f.driver(t)
	ids := []string{"check-app-Data_Integrity-1732710000", strings.Repeat("long-", 20) + "id"}
	for _, id := range ids {
		if err := d.StartJob(ctxT(t), id, failingJob); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		var st drivers.JobStatus
		err := drivertest.WaitFor(t.Context(), time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
			var err error
			st, err = d.JobStatus(ctx, id)
			return st.Done, err
		})
		if err != nil || st.ExitCode != 3 {
			t.Errorf("job %s: %+v, %v", id, st, err)
		}
	}
}

func TestOpener(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	open := Opener(f.cfg)
	docker := &plan.Plan{Metadata: plan.Metadata{Name: "d"}, Spec: plan.Spec{Driver: plan.Driver{Docker: &plan.DockerDriver{}}}}
	if _, err := open(t.Context(), docker); err == nil || !strings.Contains(err.Error(), "docker driver") {
		t.Errorf("opening a docker plan: %v", err)
	}
	drv, err := open(t.Context(), f.plan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drv.Observe(ctxT(t)); err != nil {
		t.Errorf("Observe: %v", err)
	}
	missing := *f.plan
	k := *missing.Spec.Driver.Kubernetes
	k.Candidate.Deployment = "nope"
	missing.Spec.Driver.Kubernetes = &k
	drv, err = open(t.Context(), &missing)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drv.Observe(ctxT(t)); err == nil || !strings.Contains(err.Error(), "deployment "+f.ns+"/nope not found") {
		t.Errorf("Observe with a missing Deployment: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := open(ctx, f.plan); !errors.Is(err, context.Canceled) {
		t.Errorf("open with a cancelled context: %v", err)
	}
}

// TestRouteWithoutCandidateService names the missing piece.
func TestRouteWithoutCandidateService(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1, routed: true})
	if err := f.kube.CoreV1().Services(f.ns).Delete(ctxT(t), candidateName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := f.driver(t).Apply(ctxT(t), drivers.Target{Traffic: 10})
	if err == nil || !strings.Contains(err.Error(), "no Service in "+f.ns+" selects the pods of deployment "+candidateName) {
		t.Errorf("Apply without a candidate Service: %v", err)
	}
}

// TestJobLogs reads a finished job's logs through the API server from the
// node's kubelet API (kwok serves a simulated log for every container).
func TestJobLogs(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	d := f.driver(t)
	if err := d.StartJob(ctxT(t), "logs-1", failingJob); err != nil {
		t.Fatal(err)
	}
	var st drivers.JobStatus
	err := drivertest.WaitFor(t.Context(), time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		var err error
		st, err = d.JobStatus(ctx, "logs-1")
		return st.Done, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Logs, "kwok: this container ran on a fake node") {
		t.Errorf("logs = %q", st.Logs)
	}
	if !strings.Contains(st.Message, "container run exited with code 3") {
		t.Errorf("message = %q", st.Message)
	}
}

// TestRouteWaitsForReadyReplicas gives the candidate pods that never get
// ready: Apply fails after the ready timeout with the route unchanged, so
// no request goes to a candidate that cannot answer.
func TestRouteWaitsForReadyReplicas(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 2, routed: true})
	patch := `{"spec":{"template":{"spec":{"nodeSelector":{"no-such-node":"true"}}}}}`
	if _, err := f.kube.AppsV1().Deployments(f.ns).Patch(ctxT(t), candidateName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	d := f.driver(t, WithReadyTimeout(2*time.Second))
	err := d.Apply(ctxT(t), drivers.Target{Traffic: 50})
	if err == nil || !strings.Contains(err.Error(), "not ready after 2s") || !strings.Contains(err.Error(), "route is unchanged") {
		t.Fatalf("Apply = %v, want an error saying the replicas are not ready and the route is unchanged", err)
	}
	st, err := d.Observe(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Traffic != 0 || st.CandidateReplicas != 1 {
		t.Errorf("after the failed Apply: %+v; want the route at 0%% and the candidate's replica asked for", st)
	}
}

// TestCheckpointAndFlagEvents checks that taking and restoring a checkpoint
// and changing the feature flags leave Events on both Deployments, as
// traffic shifts do, and that publishing the flags already there leaves
// none.
func TestCheckpointAndFlagEvents(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 4, routed: true})
	d := f.driver(t, WithInstance("replica-0"))
	ctx := ctxT(t)
	converge(t, d, drivers.Target{Traffic: 20})
	if err := d.PublishFlags(ctx, map[string]int{"a": 10, "b": 25}); err != nil {
		t.Fatal(err)
	}
	if err := d.PublishFlags(ctx, map[string]int{"a": 10, "b": 25}); err != nil {
		t.Fatal(err)
	}
	snap, err := d.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PublishFlags(ctx, map[string]int{"a": 50}); err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{stableName, candidateName} {
		evs, err := f.kube.CoreV1().Events(f.ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Deployment,involvedObject.name=" + name,
		})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, e := range evs.Items {
			if e.Source.Component != FieldManager || e.Reason == ReasonTrafficShifted {
				continue
			}
			got[e.Reason] = append(got[e.Reason], e.Message)
			if e.ReportingInstance != "replica-0" || !strings.Contains(e.Message, "plan app") {
				t.Errorf("event %s on %s: %q from %q", e.Reason, name, e.Message, e.ReportingInstance)
			}
		}
		for reason, want := range map[string][]string{
			ReasonFlagsChanged:       {"now a 10%, b 25%", "now a 50%; removed b"},
			ReasonCheckpointCreated:  {"took a checkpoint: stable 4 replicas, candidate 1, 20% of traffic and a 0% mirror to the candidate; feature flags a 10%, b 25%"},
			ReasonCheckpointRestored: {"restored a checkpoint: stable 4 replicas, candidate 1, 20% of traffic and a 0% mirror to the candidate; feature flags a 10%, b 25%"},
		} {
			msgs := got[reason]
			slices.Sort(msgs)
			if len(msgs) != len(want) {
				t.Errorf("%s events on %s: %q, want %d of them", reason, name, msgs, len(want))
				continue
			}
			for i := range want {
				if !strings.Contains(msgs[i], want[i]) {
					t.Errorf("%s event on %s: %q, want it to say %q", reason, name, msgs[i], want[i])
				}
			}
		}
	}
}
