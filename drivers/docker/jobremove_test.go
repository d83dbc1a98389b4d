package docker_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/docker"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// TestJobRemovedOnceRecorded runs a plan with a run phase and a job check
// through the reconciler: once the runner has recorded each job's outcome
// and logs, the job's container is gone, and the record keeps the logs.
func TestJobRemovedOnceRecorded(t *testing.T) {
	t.Parallel()
	r := newRig(t, setup{replicas: 2})
	dd := r.plan.Spec.Driver.Docker
	src := fmt.Sprintf(`apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata: {name: %s}
spec:
  target: {phase: schema}
  driver:
    docker:
      stable: {container: %s}
      candidate: {container: %s}
  phases:
    - name: schema
      run: {image: %s, command: [/testapp, exit, "0", -say, migrated]}
      verify: [schema-ok]
  verify:
    schema-ok: {run: {image: %s, command: [/testapp, exit, "0", -say, checked]}}
`, r.plan.Metadata.Name, dd.Stable.Container, dd.Candidate.Container, r.image, r.image)
	v, err := plan.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.ValidateOne(plan.Source{Path: "jobs.yaml", Data: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	run := &reconcile.Runner{
		Store: st, Clock: clk, StepTimeout: time.Minute,
		Open: func(context.Context, *plan.Plan) (drivers.Driver, error) { return r.drv, nil },
	}
	d := reconcile.NewDesired(p, "c1")
	var rec store.Record
	var sawJob bool
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatalf("the run phase and its check are not recorded done after 200 steps: %+v", rec)
		}
		if _, err := run.Step(ctx, d); err != nil {
			t.Fatalf("step: %v", err)
		}
		if rec, err = st.Load(ctx, p.Metadata.Name); err != nil {
			t.Fatal(err)
		}
		if n := jobContainers(t, r); n > 0 {
			sawJob = true
		}
		c, checked := rec.Checks["schema-ok"]
		if rec.Job != nil && rec.Job.Done && checked && !c.Pending {
			break
		}
		time.Sleep(200 * time.Millisecond)
		clk.Step(time.Second)
	}
	if !sawJob {
		t.Error("no job container was ever seen")
	}
	if !rec.Job.Succeeded || !strings.Contains(rec.Job.Logs, "migrated") {
		t.Errorf("recorded job = %+v; want it succeeded with its logs", rec.Job)
	}
	if c := rec.Checks["schema-ok"]; !c.Passed {
		t.Errorf("recorded check = %+v; want it passed", c)
	}
	if n := jobContainers(t, r); n != 0 {
		t.Errorf("%d job containers left once the outcomes are recorded, want none", n)
	}
	if _, err := r.drv.JobStatus(ctx, rec.Job.ID); err == nil {
		t.Errorf("JobStatus of the removed job %s = nil error, want not found", rec.Job.ID)
	}
}

// jobContainers counts the plan's job containers, in any state.
func jobContainers(t *testing.T, r *rig) int {
	t.Helper()
	f := client.Filters{}.Add("label", docker.LabelPlan+"="+r.plan.Metadata.Name).Add("label", docker.LabelRole+"="+docker.RoleJob)
	res, err := r.cli.ContainerList(ctxFor(t), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Items)
}
