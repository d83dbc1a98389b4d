package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/internal/promtest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

const backtestErrorRate = `sum(rate(http_requests_total{code=~"5.."}[2s])) / sum(rate(http_requests_total[2s]))`

// backtestPlan soaks a second at canary 10%, then holds at canary 50%,
// rolling back to the previous step when the error rate passes 0.05.
const backtestPlan = `apiVersion: migrate.hal9.ai/v1
kind: MigrationPlan
metadata:
  name: shop
spec:
  target: {phase: canary}
  driver:
    docker:
      stable: {service: shop-v1}
      candidate: {service: shop-v2}
  phases:
    - name: canary
      steps: [10, 50]
      soak: 1s
  guardrails:
    - name: error-rate
      prometheus: {query: '` + backtestErrorRate + `'}
      max: 0.05
`

// TestBacktestRealPrometheus records a breach in a real Prometheus — a
// testapp under load whose error rate is switched to 100% at a known time —
// and checks that backtest rolls back when Prometheus first shows it, give or
// take one step.
// firstOver returns the first time in [from, to], to 10ms, at which query
// evaluates to more than bound, as Prometheus evaluates it.
func firstOver(t *testing.T, prom *promtest.Server, query string, bound float64, from, to time.Time) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, _, _, err := prom.API.QueryRange(ctx, query, promv1.Range{Start: from, End: to, Step: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(model.Matrix)
	if !ok || len(m) != 1 {
		t.Fatalf("range query: %v", v)
	}
	for _, p := range m[0].Values {
		if float64(p.Value) > bound {
			return p.Timestamp.Time()
		}
	}
	t.Fatalf("%s never over %g between %s and %s", query, bound, stamp(from), stamp(to))
	return time.Time{}
}

func TestBacktestRealPrometheus(t *testing.T) {
	promtest.Binary(t)
	const scrape, step = 250 * time.Millisecond, 250 * time.Millisecond
	app := promtest.StartApp(t, "candidate")
	app.Load(t, 200, 200*120)
	prom := promtest.Start(t, promtest.Options{Targets: []string{app.Addr}, ScrapeInterval: scrape})
	prom.WaitUp(t, backtestErrorRate, 30*time.Second)
	time.Sleep(time.Second)

	from := time.Now()
	time.Sleep(3 * time.Second)
	breach := time.Now()
	app.Set(t, map[string]string{"errorRate": "1"})
	time.Sleep(3 * time.Second)
	to := time.Now()

	dir := t.TempDir()
	file := filepath.Join(dir, "shop.yaml")
	if err := os.WriteFile(file, []byte(backtestPlan), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string { return backtestCLI(t, file, prom.URL, step, from, to, args...) }

	var b guardrails.Backtest
	if err := json.Unmarshal([]byte(run("-o", "json")), &b); err != nil {
		t.Fatal(err)
	}
	advanced := false
	for _, e := range b.Events {
		advanced = advanced || e.Action == string(reconcile.Advance) && e.To == plan.Position{Phase: "canary", Percentage: 50}
	}
	if !advanced {
		t.Fatalf("events %+v: want an advance to canary 50%% before the breach", b.Events)
	}
	// The first rollback; the fault persists, so more follow, one position
	// at a time (this plan's guardrail has no `for`).
	var rb guardrails.BacktestEvent
	for _, e := range b.Events {
		if e.Action == string(reconcile.Rollback) {
			rb = e
			break
		}
	}
	if rb.Action != string(reconcile.Rollback) || !b.End.RolledBack {
		t.Fatalf("events %+v, end %+v: want a rollback", b.Events, b.End)
	}
	// When did Prometheus first show the breach? Its own answer, every
	// 10ms from the switch on.
	visible := firstOver(t, prom, backtestErrorRate, 0.05, breach, to)
	t.Logf("error rate switched at %s, over 0.05 in Prometheus from %s (%s later); backtest rolls back at %s: %s",
		stamp(breach), stamp(visible), visible.Sub(breach).Round(time.Millisecond), stamp(rb.At), rb.Reason)
	// Never before the switch, nor before Prometheus shows it; at the latest
	// one step and one scrape after it does: the first evaluation after, or
	// the one after the next scrape when rate's extrapolation puts the value
	// back under the bound for a moment (values hover around it as the
	// first errors enter the window).
	// visible is found by asking every 10ms, the backtest on its own
	// grid: it may see the value over the bound up to 10ms sooner (a CI
	// run: 1ms).
	if rb.At.Before(breach) || rb.At.Before(visible.Add(-10*time.Millisecond)) || rb.At.Sub(visible) > step+scrape+time.Millisecond {
		t.Fatalf("rollback at %s, want within %s after %s", stamp(rb.At), step+scrape, stamp(visible))
	}
	if rb.Guardrail != "error-rate" || rb.Value <= 0.05 || rb.Bound != "max 0.05" ||
		rb.From != (plan.Position{Phase: "canary", Percentage: 50}) || rb.To != (plan.Position{Phase: "canary", Percentage: 10}) {
		t.Fatalf("rollback %+v", rb)
	}
	g := b.Guardrails[0]
	if !slices.ContainsFunc(g.Changes, func(r reconcile.Reading) bool { return r.Health == reconcile.Breached && r.Since.Equal(rb.At) }) {
		t.Fatalf("guardrail changes %+v: want Breached from %s", g.Changes, stamp(rb.At))
	}

	text := run()
	if !strings.Contains(text, "Would have rolled back at "+stamp(rb.At)+": guardrail error-rate is ") {
		t.Fatalf("text output:\n%s", text)
	}
}

// TestBacktestAuthenticatedPrometheus replays a plan through a real
// Prometheus that refuses requests without credentials, reached with the
// prometheus: settings of the daemon's config file: basic auth over TLS
// (Prometheus's own web configuration), and a bearer token (a reverse proxy
// in front of it that wants one).
func TestBacktestAuthenticatedPrometheus(t *testing.T) {
	promtest.Binary(t)
	prom := promtest.Start(t, promtest.Options{BasicAuth: &promtest.BasicAuth{Username: "ops", Password: "s3cret"}, TLS: true})
	t.Setenv(prometheusEnv, "")
	t.Setenv(configEnv, "")

	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	planFile := write("shop.yaml", strings.Replace(backtestPlan, backtestErrorRate, "vector(0.0125)", 1))
	password := write("password", "s3cret\n")
	token := write("token", "t0ken\n")
	basic := write("basic.yaml", fmt.Sprintf("prometheus:\n  url: %s\n  basicAuth: {username: ops, passwordFile: %s}\n  tls: {caFile: %s}\n", prom.URL, password, prom.CAFile))
	noAuth := write("noauth.yaml", fmt.Sprintf("prometheus:\n  url: %s\n  tls: {caFile: %s}\n", prom.URL, prom.CAFile))
	elsewhere := write("elsewhere.yaml", fmt.Sprintf("prometheus:\n  url: https://127.0.0.1:1\n  basicAuth: {username: ops, passwordFile: %s}\n  tls: {caFile: %s}\n", password, prom.CAFile))

	// The proxy wants a bearer token, and passes requests on with the
	// basic auth Prometheus wants.
	target, _ := url.Parse(prom.URL)
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(prom.CAFile); err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA %s: %v", prom.CAFile, err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	bearer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			http.Error(w, "no bearer token", http.StatusUnauthorized)
			return
		}
		r.SetBasicAuth("ops", "s3cret")
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(bearer.Close)
	withToken := write("bearer.yaml", fmt.Sprintf("prometheus:\n  url: %s\n  bearerTokenFile: %s\n", bearer.URL, token))
	withoutToken := write("nobearer.yaml", fmt.Sprintf("prometheus:\n  url: %s\n", bearer.URL))

	backtest := func(args ...string) (string, error) {
		t.Helper()
		return run(t, append([]string{"plan", "backtest", planFile, "--from", "-1m", "--step", "10s"}, args...)...)
	}
	replayed := func(out string) bool {
		return strings.Contains(out, "error-rate (max 0.05): Healthy from ") && strings.Contains(out, "(0.0125)")
	}
	for _, tt := range []struct {
		name string
		args []string
		env  string // $HAL9_MIGRATE_CONFIG
	}{
		{"basic auth over TLS", []string{"--config", basic}, ""},
		{"basic auth over TLS, from the environment", nil, basic},
		{"--prometheus over the file's URL", []string{"--config", elsewhere, "--prometheus", prom.URL}, ""},
		{"a bearer token", []string{"--config", withToken}, ""},
	} {
		t.Setenv(configEnv, tt.env)
		out, err := backtest(tt.args...)
		if err != nil || !replayed(out) {
			t.Errorf("%s: %v\n%s", tt.name, err, out)
		}
	}
	t.Setenv(configEnv, "")

	// Without credentials, Prometheus and the proxy refuse.
	for name, args := range map[string][]string{
		"no basic auth":   {"--config", noAuth},
		"no bearer token": {"--config", withoutToken},
	} {
		out, err := backtest(args...)
		if err == nil || !strings.Contains(err.Error(), "401") || replayed(out) {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	// A file the settings name must exist.
	missing := write("missing.yaml", fmt.Sprintf("prometheus:\n  url: %s\n  bearerTokenFile: %s\n", bearer.URL, filepath.Join(dir, "nope")))
	if _, err := backtest("--config", missing); err == nil || !strings.Contains(err.Error(), "prometheus settings of "+missing+": prometheus bearerTokenFile: ") {
		t.Errorf("a missing token file: %v", err)
	}
}

// TestBacktestComparesWithStable records both sides of a service in a real
// Prometheus: both fine, then both failing half their requests together,
// then only the candidate. A backtest of a guardrail comparing the
// candidate's error rate with stable's rolls back only in the last stretch,
// its reason giving both sides' values.
func TestBacktestComparesWithStable(t *testing.T) {
	promtest.Binary(t)
	const scrape, step = 250 * time.Millisecond, 250 * time.Millisecond
	stable, candidate := promtest.StartApp(t, "v1"), promtest.StartApp(t, "v2")
	stable.Load(t, 100, 100*120)
	candidate.Load(t, 100, 100*120)
	prom := promtest.Start(t, promtest.Options{Targets: []string{stable.Addr, candidate.Addr}, ScrapeInterval: scrape})
	const errorRate = `(sum(rate(http_requests_total{version="$side",code=~"5.."}[1s])) or vector(0)) / sum(rate(http_requests_total{version="$side"}[1s]))`
	prom.WaitUp(t, strings.ReplaceAll(errorRate, "$side", "v2"), 30*time.Second)
	time.Sleep(time.Second)

	from := time.Now()
	time.Sleep(3 * time.Second)
	together := time.Now()
	stable.Set(t, map[string]string{"errorRate": "0.5"})
	candidate.Set(t, map[string]string{"errorRate": "0.5"})
	time.Sleep(4 * time.Second)
	alone := time.Now()
	stable.Set(t, map[string]string{"errorRate": "0"})
	time.Sleep(4 * time.Second)
	to := time.Now()

	dir := t.TempDir()
	file := filepath.Join(dir, "shop.yaml")
	src := strings.Replace(strings.Replace(backtestPlan, backtestErrorRate, errorRate, 1), "      max: 0.05\n",
		"      compare: {maxDelta: 0.1}\n      for: 1s\n", 1)
	src = strings.Replace(src, "  phases:", "  sides: {stable: v1, candidate: v2}\n  phases:", 1)
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var b guardrails.Backtest
	if err := json.Unmarshal([]byte(backtestCLI(t, file, prom.URL, step, from, to, "-o", "json")), &b); err != nil {
		t.Fatal(err)
	}
	var rb guardrails.BacktestEvent
	for _, e := range b.Events {
		if e.Action == string(reconcile.Rollback) {
			rb = e
			break
		}
	}
	t.Logf("both failing from %s, the candidate alone from %s; first rollback at %s: %s", stamp(together), stamp(alone), stamp(rb.At), rb.Reason)
	if rb.Action == "" {
		t.Fatalf("no rollback: events %+v", b.Events)
	}
	if rb.At.Before(alone) {
		t.Fatalf("rolled back at %s, while both sides failed together (the candidate alone from %s)", stamp(rb.At), stamp(alone))
	}
	if rb.Compare == nil || rb.Compare.Candidate < 0.3 || rb.Compare.Stable > 0.2 || !strings.Contains(rb.Reason, "vs stable") {
		t.Fatalf("rollback %+v, compare %+v", rb, rb.Compare)
	}
}

// backtestCLI runs `plan backtest` of file over [from, to] through the
// Prometheus at url, with args after, and returns what it prints.
func backtestCLI(t *testing.T, file, url string, step time.Duration, from, to time.Time, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCmd()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(append([]string{"plan", "backtest", file, "--prometheus", url, "--step", step.String(),
		"--from", from.Format(time.RFC3339Nano), "--to", to.Format(time.RFC3339Nano)}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("backtest: %v\n%s", err, stderr.String())
	}
	return stdout.String()
}
