package metrics_test

// These tests check deploy/: the alert rules with promtool, and the Grafana
// dashboards against a real Prometheus scraping this package's metrics and
// the test app. They need Debian's `prometheus` package (promtool and
// prometheus); without it they skip, except under CI=true, where they fail.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gopkg.in/yaml.v3"

	"github.com/hal9ai/hal9-migrate/internal/testapp"
	"github.com/hal9ai/hal9-migrate/metrics"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

const deployDir = "../deploy"

// tool returns the path of a command from Debian's prometheus package.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	testenv.Missing(t, "%s is not installed (apt-get install prometheus); deploy/ is not checked", name)
	return ""
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

func TestPromtoolChecksRulesAndConfig(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := filepath.Join(deployDir, "prometheus")
	run(t, dir, promtool, "check", "rules", "alerts.yaml")
	run(t, dir, promtool, "check", "config", "prometheus.yml")
	run(t, dir, promtool, "test", "rules", "alerts_test.yaml")
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTests struct {
	Tests []struct {
		Name  string `yaml:"name"`
		Cases []struct {
			Alert string `yaml:"alertname"`
			Exp   []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestEveryAlertIsTestedBothWays holds alerts_test.yaml to showing every
// alert firing on some input and quiet on another, and the rules to the
// metrics that exist.
func TestEveryAlertIsTestedBothWays(t *testing.T) {
	var rules ruleFile
	readYAML(t, filepath.Join(deployDir, "prometheus", "alerts.yaml"), &rules)
	var tests ruleTests
	readYAML(t, filepath.Join(deployDir, "prometheus", "alerts_test.yaml"), &tests)
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tt := range tests.Tests {
		for _, c := range tt.Cases {
			if len(c.Exp) > 0 {
				firing[c.Alert] = true
			} else {
				quiet[c.Alert] = true
			}
		}
	}
	known := knownMetrics(t)
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if !firing[r.Alert] {
				t.Errorf("alert %s: no test shows it firing", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s: no test shows it quiet", r.Alert)
			}
			for _, m := range metricNames(r.Expr) {
				if !known[m] {
					t.Errorf("alert %s uses %s, which neither the daemon nor the service exports", r.Alert, m)
				}
			}
		}
	}
	for _, want := range []string{"HighErrorRate", "HighLatency", "MigrationStalled", "GuardrailBreached", "MigrationFrozen", "RollbackNotCommitted"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yaml has no alert %s", want)
		}
	}
}

// knownMetrics is every metric name a dashboard or rule may use: the
// daemon's, once every method has been called, and the test app's, which
// exports what a migrated service is expected to.
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	populate(t, metrics.New(reg))
	daemon := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer daemon.Close()
	app := httptest.NewServer(testapp.New("v1", testapp.Behaviour{}).Handler())
	defer app.Close()
	if _, err := http.Get(app.URL + "/"); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, u := range []string{daemon.URL, app.URL} {
		for name := range exported(t, u+"/metrics") {
			known[name] = true
		}
	}
	return known
}

// exported reads the metric names of an exposition from its TYPE lines,
// with the series names a histogram or summary adds.
func exported(t *testing.T, u string) map[string]bool {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		out[f[2]] = true
		switch f[3] {
		case "histogram":
			out[f[2]+"_bucket"], out[f[2]+"_sum"], out[f[2]+"_count"] = true, true, true
		case "summary":
			out[f[2]+"_sum"], out[f[2]+"_count"] = true, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// populate calls every method, so that every metric has series: a plan in
// its canary with one guardrail breached, one healthy, one without data, a
// rollback not yet committed, and a failing git sync.
func populate(t *testing.T, m *metrics.Metrics) {
	p := loadPlan(t)
	m.ObserveMigration(p, store.Record{Plan: "shop", Position: plan.Position{Phase: "canary", Percentage: 10},
		Status: reconcile.StatusProgressing, EnteredAt: time.Now().Add(-3 * time.Hour)})
	m.ObserveGuardrails("shop", []reconcile.Reading{
		{Name: "error-rate", Health: reconcile.Breached, Value: 0.09},
		{Name: "throughput", Health: reconcile.Healthy, Value: 12},
		{Name: "health", Health: reconcile.NoData},
	})
	m.SetConditions("shop", []string{"RollbackNotCommitted"})
	m.RolledBack("shop")
	m.ReconcileDone(20 * time.Millisecond)
	m.GitSynced(time.Now(), 100*time.Millisecond, nil)
	m.GitSynced(time.Now(), time.Second, fmt.Errorf("connection refused"))
}

var (
	stringLit  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	braces     = regexp.MustCompile(`\{[^}]*\}`)
	brackets   = regexp.MustCompile(`\[[^\]]*\]`)
	labelLists = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	token      = regexp.MustCompile(`\$\{?\w+\}?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	keywords   = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring", "group_left", "group_right"}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and label lists are
// gone, that are not functions, keywords or Grafana variables.
func metricNames(expr string) []string {
	s := stringLit.ReplaceAllString(expr, `""`)
	s = braces.ReplaceAllString(s, " ")
	s = brackets.ReplaceAllString(s, " ")
	s = labelLists.ReplaceAllString(s, " ")
	var out []string
	for _, m := range token.FindAllStringSubmatch(s, -1) {
		tok := m[0]
		switch {
		case m[1] != "", strings.HasPrefix(tok, "$"), tok[0] >= '0' && tok[0] <= '9',
			slices.Contains(keywords, strings.ToLower(tok)):
			continue
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	sort.Strings(out)
	return out
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`hal9_migration_progress`, []string{"hal9_migration_progress"}},
		{`sum by (job, version) (rate(http_requests_total{code=~"5..",job=~"$job"}[$__rate_interval])) / sum by (job, version) (rate(http_requests_total[5m])) > 0.05`,
			[]string{"http_requests_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m]))) > 1e-3`, []string{"http_request_duration_seconds_bucket"}},
		{`(time() - a_timestamp > b_seconds) and on (plan) (c{status="x"} == 1)`, []string{"a_timestamp", "b_seconds", "c"}},
		{`sum(rate(x[1m])) without (instance) or vector(0)`, []string{"x"}},
		{`count(up{job="a b"})`, []string{"up"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

// dashboard is what the checks read of a Grafana dashboard.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string      `json:"name"`
			Type       string      `json:"type"`
			Query      any         `json:"query"`
			Definition string      `json:"definition"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

// query is one PromQL expression of a dashboard, and where it is.
type query struct {
	where, expr string
	labels      bool // a label_values() variable query: expr is its selector
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*(\w+)\)\s*$`)

// loadDashboards reads every dashboard, checks its structure, and returns
// the queries of its panels and variables.
func loadDashboards(t *testing.T) []query {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, "grafana", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var queries []query
	uids, titles := map[string]string{}, []string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		dec := json.NewDecoder(strings.NewReader(string(b)))
		if err := dec.Decode(&d); err != nil {
			t.Errorf("%s: not valid JSON: %v", f, err)
			continue
		}
		name := filepath.Base(f)
		if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
			t.Errorf("%s: want a uid, a title and a schemaVersion", name)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s: uid %q is %s's too", name, d.UID, other)
		}
		uids[d.UID] = name
		titles = append(titles, d.Title)

		hasDS := false
		for _, v := range d.Templating.List {
			switch v.Type {
			case "datasource":
				hasDS = v.Name == "datasource" && v.Query == "prometheus"
			case "query":
				if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
					t.Errorf("%s: variable %s does not use the datasource variable", name, v.Name)
				}
				m := labelValues.FindStringSubmatch(v.Definition)
				if m == nil {
					t.Errorf("%s: variable %s: want label_values(selector, label), got %q", name, v.Name, v.Definition)
					continue
				}
				queries = append(queries, query{where: name + " variable " + v.Name, expr: m[1], labels: true})
			}
		}
		if !hasDS {
			t.Errorf("%s: no datasource variable of type prometheus named datasource", name)
		}

		ids := map[int]bool{}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				where := fmt.Sprintf("%s panel %d %q", name, p.ID, p.Title)
				if ids[p.ID] {
					t.Errorf("%s: id used twice", where)
				}
				ids[p.ID] = true
				if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
					t.Errorf("%s: gridPos %+v is off the 24-column grid", where, p.GridPos)
				}
				if p.Type == "row" {
					walk(p.Panels)
					continue
				}
				if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
					t.Errorf("%s: does not use the datasource variable", where)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no query", where)
				}
				for _, q := range p.Targets {
					if strings.TrimSpace(q.Expr) == "" || q.RefID == "" {
						t.Errorf("%s: a target without expr or refId", where)
					}
					if q.Datasource != nil && q.Datasource.UID != "${datasource}" {
						t.Errorf("%s %s: does not use the datasource variable", where, q.RefID)
					}
					queries = append(queries, query{where: where + " " + q.RefID, expr: q.Expr})
				}
			}
		}
		walk(d.Panels)
	}
	for _, want := range []string{"Overview", "Migration Progress", "Guardrails"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.HasSuffix(s, want) }) {
			t.Errorf("no dashboard titled ... %s among %v", want, titles)
		}
	}
	return queries
}

func TestDashboardsUseOnlyExportedMetrics(t *testing.T) {
	queries := loadDashboards(t)
	if len(queries) == 0 {
		t.Fatal("no dashboard queries found")
	}
	known := knownMetrics(t)
	for _, q := range queries {
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: %q selects no metric", q.where, q.expr)
		}
		for _, m := range names {
			if !known[m] {
				t.Errorf("%s: %s is exported by neither the daemon nor the service", q.where, m)
			}
		}
	}
}

var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// promQL turns a dashboard expression into one Prometheus runs, as Grafana
// would with every variable at "All".
func promQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		switch strings.Trim(v, "${}") {
		case "__rate_interval", "__interval":
			return "5s"
		case "__range":
			return "1m"
		}
		return ".*"
	})
}

// TestDashboardsOnPrometheus runs every dashboard query on a real Prometheus
// that scrapes this package's metrics and two versions of the test app
// under load: each must parse, and each must show data. It also checks that
// Prometheus loads alerts.yaml and fires the daemon's alerts on that data.
func TestDashboardsOnPrometheus(t *testing.T) {
	bin := tool(t, "prometheus")
	queries := loadDashboards(t)

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	populate(t, m)
	daemon := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer daemon.Close()
	var apps []string
	for _, b := range []struct {
		version string
		b       testapp.Behaviour
	}{{"v1", testapp.Behaviour{}}, {"v2", testapp.Behaviour{ErrorRate: 0.3, Latency: 2 * time.Millisecond}}} {
		s := httptest.NewServer(testapp.New(b.version, b.b).Handler())
		defer s.Close()
		apps = append(apps, s.URL)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // traffic, and a daemon that keeps reconciling
		for ctx.Err() == nil {
			for _, u := range apps {
				if resp, err := http.Get(u + "/"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			m.ReconcileDone(15 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	base := startPrometheus(t, bin, daemon.URL, apps)

	var pending []query
	deadline := time.Now().Add(90 * time.Second)
	for {
		pending = pending[:0]
		for _, q := range queries {
			n, err := runQuery(base, q)
			if err != nil {
				t.Fatalf("%s: %q: %v", q.where, q.expr, err)
			}
			if n == 0 {
				pending = append(pending, q)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	for _, q := range pending {
		t.Errorf("%s: %q shows no data with a daemon and a service scraped", q.where, promQL(q.expr))
	}

	t.Logf("every dashboard query showed data after %s", time.Since(deadline.Add(-90*time.Second)).Round(time.Second))

	// The rules load, and the daemon's state fires the alerts it should: a
	// guardrail breached, and a rollback that happens now.
	m.RolledBack("shop")
	deadline = time.Now().Add(60 * time.Second)
	want := map[string]bool{"GuardrailBreached": false, "MigrationRolledBack": false}
	for time.Now().Before(deadline) {
		var res struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		getJSON(t, base+"/api/v1/alerts", &res)
		for _, a := range res.Data.Alerts {
			if _, ok := want[a.Labels["alertname"]]; ok && a.State == "firing" && a.Labels["plan"] == "shop" {
				want[a.Labels["alertname"]] = true
			}
		}
		if !slices.Contains(mapValues(want), false) {
			break
		}
		time.Sleep(time.Second)
	}
	for name, fired := range want {
		if !fired {
			t.Errorf("Prometheus did not fire %s for plan shop", name)
		}
	}
}

func mapValues(m map[string]bool) []bool {
	var out []bool
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// runQuery runs q on Prometheus and returns how many series or values it
// gave; an error is a query Prometheus refused.
func runQuery(base string, q query) (int, error) {
	var u string
	if q.labels {
		u = base + "/api/v1/series?" + url.Values{"match[]": {promQL(q.expr)}}.Encode()
	} else {
		u = base + "/api/v1/query?" + url.Values{"query": {promQL(q.expr)}}.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var res struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return 0, fmt.Errorf("decode the answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if res.Status != "success" {
		return 0, fmt.Errorf("%s: %s", res.ErrorType, res.Error)
	}
	if q.labels {
		var series []map[string]string
		err := json.Unmarshal(res.Data, &series)
		return len(series), err
	}
	var data struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(res.Data, &data); err != nil {
		return 0, err
	}
	var result []any
	if err := json.Unmarshal(data.Result, &result); err != nil {
		return 1, nil // a scalar or a string
	}
	return len(result), nil
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", u, err)
	}
}

// startPrometheus starts Prometheus on 127.0.0.1, scraping the daemon as
// job hal9-migrate and the apps as job shop every 500ms, with alerts.yaml
// loaded, and returns its base URL once it is ready.
func startPrometheus(t *testing.T, bin, daemon string, apps []string) string {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rules, err := filepath.Abs(filepath.Join(deployDir, "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	var targets []string
	for _, a := range apps {
		targets = append(targets, fmt.Sprintf("'%s'", host(a)))
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 500ms, evaluation_interval: 500ms}
rule_files: ['%s']
scrape_configs:
  - job_name: hal9-migrate
    static_configs: [{targets: ['%s']}]
  - job_name: shop
    static_configs: [{targets: [%s]}]
`, rules, host(daemon), strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case <-exited:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("prometheus exited: %v\n%s", waitErr, b)
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("prometheus not ready on %s after 30s\n%s", addr, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
