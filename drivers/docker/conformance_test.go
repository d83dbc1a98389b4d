package docker_test

import (
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// TestConformance runs the drivers' conformance suite against the engine on
// the machine, once per way of splitting traffic: by replica ratio (at
// replica totals of 1, 2, 3 and 10: the small ones are where the ratio
// cannot reach most shares), through nginx on the host, through nginx in a
// container and through HAProxy on the host (which cannot mirror), selecting
// containers by name in most and by Compose service in one.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     setup
		tolerance int
	}{
		{"ratio-1", setup{replicas: 1}, 0},
		{"ratio-2", setup{replicas: 2}, 0},
		{"ratio-3", setup{replicas: 3}, 0},
		{"ratio-10", setup{replicas: 10}, 0},
		{"nginx-host", setup{compose: true, router: routerHost}, 0},
		{"nginx-container", setup{router: routerContainer}, 0},
		{"haproxy-host", setup{router: routerHAProxy}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := dockertest.TestAppImage(t)
			drivertest.Run(t, drivertest.Harness{
				New:              func(t *testing.T) drivers.Driver { return newRig(t, tc.setup).drv },
				TrafficTolerance: tc.tolerance,
				NoMirror:         tc.setup.router == noRouter || tc.setup.router == routerHAProxy,
				SucceedingJob:    plan.Run{Image: img, Command: []string{"/testapp", "exit", "0", "-say", "migrated"}},
				FailingJob:       plan.Run{Image: img, Command: []string{"/testapp", "exit", "3"}},
				FailingExitCode:  3,
				SlowJob:          plan.Run{Image: img, Command: []string{"/testapp", "sleep", "1h"}},
				Settle:           time.Minute,
				JobTimeout:       time.Minute,
				Poll:             200 * time.Millisecond,
			})
		})
	}
}
