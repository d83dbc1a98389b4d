package kubernetes

import (
	"fmt"
	"testing"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// Jobs run on kwok's fake node, whose stages (scripts/k8s-testenv.sh) end a
// Job's pod as its environment says: KWOK_EXIT_CODE, KWOK_DURATION. The
// image and command are what a real cluster would run.
var (
	succeedingJob = plan.Run{Image: "hal9-testapp", Command: []string{"/testapp", "exit", "0"}}
	failingJob    = plan.Run{Image: "hal9-testapp", Command: []string{"/testapp", "exit", "3"},
		Env: map[string]string{"KWOK_EXIT_CODE": "3"}}
	slowJob = plan.Run{Image: "hal9-testapp", Command: []string{"/testapp", "sleep", "1h"},
		Env: map[string]string{"KWOK_DURATION": "1h"}}
)

// modes are the two ways a driver reads: from the informers of a Cluster,
// as the daemon's do, and from the API server at every call, as New's
// do. The informer mode runs every case, the direct one a few (it is the
// same driver but for its reader).
var modes = []struct {
	name string
	open func(*fixture, testing.TB) *Driver
}{
	{"informer", func(f *fixture, t testing.TB) *Driver { return f.cachedDriver(t) }},
	{"direct", func(f *fixture, t testing.TB) *Driver { return f.driver(t) }},
}

// TestConformance runs the driver conformance suite against a real API
// server, with the split carried by each kind of route: an HTTPRoute and a
// GRPCRoute.
func TestConformance(t *testing.T) {
	for _, mode := range modes {
		for _, kind := range []struct {
			name string
			grpc bool
		}{{"httpRoute", false}, {"grpcRoute", true}} {
			if mode.name == "direct" && kind.grpc {
				continue
			}
			t.Run(mode.name+"/"+kind.name, func(t *testing.T) {
				drivertest.Run(t, drivertest.Harness{
					New: func(t *testing.T) drivers.Driver {
						return mode.open(newFixture(t, fixtureOpts{replicas: 4, routed: true, grpc: kind.grpc}), t)
					},
					SucceedingJob:   succeedingJob,
					FailingJob:      failingJob,
					FailingExitCode: 3,
					SlowJob:         slowJob,
				})
			})
		}
	}
}

// TestConformanceReplicaRatio runs the suite without a route: the split is
// the replica ratio, which cannot mirror, at replica totals of 1, 2, 3 and
// 10. The driver reports its total, so a state matches a target exactly
// when it shows the share traffic.RatioFor reaches.
func TestConformanceReplicaRatio(t *testing.T) {
	for _, mode := range modes {
		for _, total := range []int32{1, 2, 3, 10} {
			if mode.name == "direct" && total != 3 {
				continue
			}
			t.Run(fmt.Sprint(mode.name, "/replicas-", total), func(t *testing.T) {
				drivertest.Run(t, drivertest.Harness{
					New: func(t *testing.T) drivers.Driver {
						return mode.open(newFixture(t, fixtureOpts{replicas: total}), t)
					},
					NoMirror:        true,
					SucceedingJob:   succeedingJob,
					FailingJob:      failingJob,
					FailingExitCode: 3,
					SlowJob:         slowJob,
				})
			})
		}
	}
}
