// Package plantest generates valid MigrationPlan files for tests and
// benchmarks: varied in driver, phases, steps and guardrails, and
// deterministic for a given random source. It also generates hostile files
// (alias bombs, endless CUE), for the tests of the loader's limits. It is
// not used by the daemon.
package plantest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// Generate returns the YAML text of a valid plan named name.
func Generate(r *rand.Rand, name string) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("apiVersion: migrate.hal9.ai/v1\nkind: MigrationPlan\nmetadata:\n  name: %s\n  labels: {team: team-%d}\nspec:\n", name, r.IntN(20))

	type phase struct {
		name  string
		steps []int
	}
	var phases []phase
	traffic := 0
	routed := r.IntN(3) > 0 // only a router can mirror
	if routed && r.IntN(2) == 0 {
		phases = append(phases, phase{name: "shadow"})
	}
	for i, n := 0, 1+r.IntN(3); i < n && traffic < 90; i++ {
		var steps []int
		for s, k := traffic, 1+r.IntN(4); k > 0 && s < 95; k-- {
			s += 1 + r.IntN(max(1, (95-s)/2))
			steps = append(steps, s)
		}
		traffic = steps[len(steps)-1]
		phases = append(phases, phase{name: fmt.Sprintf("canary-%d", i), steps: steps})
		if i == 0 && r.IntN(2) == 0 {
			phases = append(phases, phase{name: "state-migration"})
		}
	}
	phases = append(phases, phase{name: "full", steps: []int{100}})

	target := phases[r.IntN(len(phases))]
	w("  target:\n    phase: %s\n", target.name)
	if len(target.steps) > 1 && r.IntN(2) == 0 {
		w("    percentage: %d\n", target.steps[r.IntN(len(target.steps))])
	}
	if r.IntN(2) == 0 {
		w("  driver:\n    kubernetes:\n      namespace: ns-%d\n      stable: {deployment: %s-v1}\n      candidate: {deployment: %s-v2}\n", r.IntN(50), name, name)
		if routed {
			w("      traffic: {httpRoute: %s}\n", name)
		}
	} else {
		w("  driver:\n    docker:\n      stable: {service: %s-stable}\n      candidate: {service: %s-candidate}\n", name, name)
		if routed {
			w("      traffic: {nginx: {container: %s-router, upstream: %s}}\n", name, name)
		}
	}
	w("  phases:\n")
	for _, ph := range phases {
		w("    - name: %s\n", ph.name)
		switch {
		case ph.name == "shadow":
			w("      mirror: %d\n      soak: %dh\n", 10*(1+r.IntN(10)), 1+r.IntN(48))
		case ph.name == "state-migration":
			w("      run: {image: \"%s-migrator:%d.0\", command: [migrate, up], timeout: %dm}\n", name, 1+r.IntN(9), 10+r.IntN(240))
			w("      checkpoint: before-state\n      verify: [integrity]\n      irreversible: true\n")
		default:
			parts := make([]string, len(ph.steps))
			for i, s := range ph.steps {
				parts[i] = fmt.Sprint(s)
			}
			w("      steps: [%s]\n      soak: %dm\n", strings.Join(parts, ", "), 1+r.IntN(1440))
		}
		if ph.name == "full" && r.IntN(2) == 0 {
			w("      decommission: {after: %dh}\n", 1+r.IntN(72))
		}
	}
	w("  guardrails:\n")
	w("    - name: error-rate\n      prometheus: {query: 'sum(rate(http_requests_total{job=\"%s\",code=~\"5..\"}[1m])) / sum(rate(http_requests_total{job=\"%s\"}[1m]))'}\n      max: 0.0%d\n      for: %dm\n", name, name, 1+r.IntN(9), 1+r.IntN(10))
	if r.IntN(2) == 0 {
		w("    - name: latency-p99\n      prometheus: {query: 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=\"%s\"}[1m])))'}\n      max: 0.%03d\n      for: 5m\n", name, 10+r.IntN(900))
	}
	w("    - name: health\n      http: {url: 'http://%s-candidate:8080/healthz'}\n      failures: %d\n", name, 1+r.IntN(5))
	w("  rollback:\n    automatic: true\n    to: %s\n    onNoData: %s\n",
		[]string{"previous-step", "start"}[r.IntN(2)], []string{"hold", "rollback", "ignore"}[r.IntN(3)])
	w("  verify:\n    integrity: {run: {image: \"%s-migrator:1.0\", command: [migrate, check]}}\n", name)
	if n := r.IntN(5); n > 0 {
		w("  features:\n")
		for i := range n {
			w("    flag_%d: %d\n", i, r.IntN(101))
		}
	}
	return []byte(b.String())
}

// WriteDir writes n generated plans into dir as plan-0000.yaml and so on,
// and returns their paths.
func WriteDir(dir string, n int, seed uint64) ([]string, error) {
	r := rand.New(rand.NewPCG(seed, seed))
	paths := make([]string, n)
	for i := range n {
		paths[i] = filepath.Join(dir, fmt.Sprintf("plan-%04d.yaml", i))
		if err := os.WriteFile(paths[i], Generate(r, fmt.Sprintf("plan-%04d", i)), 0o644); err != nil {
			return nil, err
		}
	}
	return paths, nil
}
