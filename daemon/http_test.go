package daemon

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	return do(t, http.MethodGet, url, header...)
}

func do(t *testing.T, method, url string, header ...string) (int, string) {
	t.Helper()
	return doBody(t, method, url, "{}", header...)
}

func doBody(t *testing.T, method, url, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTP(t *testing.T) {
	r := newRig(t)
	srv := httptest.NewServer(r.d.Handler(HTTPOptions{
		WebhookSecret: []byte("s3cret"), Branch: "main", APIToken: "t0ken",
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "# metrics\n") }),
	}))
	defer srv.Close()

	if code, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz: %d", code)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not been read") {
		t.Errorf("readyz before the first sync: %d %s", code, body)
	}

	r.guards.readings = []reconcile.Reading{
		{Name: "errors", Health: reconcile.Healthy, Value: 0.01, Bound: "max 0.05 for 5m"},
		{Name: "health", Health: reconcile.Healthy},
	}
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })

	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("readyz after a sync: %d", code)
	}
	if code, body := get(t, srv.URL+"/metrics"); code != http.StatusOK || body != "# metrics\n" {
		t.Errorf("metrics: %d %q", code, body)
	}

	code, body := get(t, srv.URL+"/api/v1/migrations?history=5")
	if code != http.StatusOK {
		t.Fatalf("migrations: %d %s", code, body)
	}
	var list struct{ Migrations []map[string]any }
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Migrations) != 1 {
		t.Fatalf("migrations: %v %s", err, body)
	}
	var m Migration
	code, body = get(t, srv.URL+"/api/v1/migrations/base")
	if code != http.StatusOK {
		t.Fatalf("migration base: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if m.Position != (plan.Position{Phase: "canary", Percentage: 10}) || m.TargetPos != m.Position || m.State != reconcile.StatusHolding {
		t.Errorf("position %s target %s state %s", m.Position, m.TargetPos, m.State)
	}
	states := map[string]string{}
	for _, s := range m.Timeline {
		states[s.Position.String()] = s.State
	}
	want := map[string]string{"shadow 0%": "done", "canary 5%": "done", "canary 10%": "current", "canary 25%": "beyond", "full 100%": "beyond"}
	for pos, st := range want {
		if states[pos] != st {
			t.Errorf("timeline %s: %q, want %q (%v)", pos, states[pos], st, states)
		}
	}
	if m.Progress <= 0 || m.Progress >= 1 {
		t.Errorf("progress %v", m.Progress)
	}
	if len(m.Guardrails) != 2 || m.Guardrails[0].Value != 0.01 || m.Guardrails[0].Bound != "max 0.05 for 5m" {
		t.Errorf("guardrails %+v", m.Guardrails)
	}
	if m.Decision == nil || m.Decision.Kind != string(reconcile.Wait) || m.Driver == nil || m.Driver.Traffic != 10 {
		t.Errorf("decision %+v driver %+v", m.Decision, m.Driver)
	}
	if len(m.History) == 0 {
		t.Error("no history")
	}
	if code, body := get(t, srv.URL+"/api/v1/migrations/nope"); code != http.StatusNotFound || !strings.Contains(body, `no migration named \"nope\"`) {
		t.Errorf("unknown migration: %d %s", code, body)
	}
	if code, body := get(t, srv.URL+"/api/v1/migrations?history=x"); code != http.StatusBadRequest {
		t.Errorf("bad history: %d %s", code, body)
	}

	// Mutating endpoints need the token.
	if code, _ := do(t, http.MethodPost, srv.URL+"/api/v1/sync"); code != http.StatusUnauthorized {
		t.Errorf("sync without a token: %d", code)
	}
	if code, _ := do(t, http.MethodPost, srv.URL+"/api/v1/sync", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("sync with a wrong token: %d", code)
	}
	if code, _ := do(t, http.MethodPost, srv.URL+"/api/v1/sync", "Authorization", "Bearer t0ken"); code != http.StatusAccepted {
		t.Errorf("sync with the token: %d", code)
	}
	select {
	case <-r.d.wakeSync:
	default:
		t.Error("an authorized sync did not wake the loop")
	}
	noToken := httptest.NewServer(r.d.Handler(HTTPOptions{}))
	defer noToken.Close()
	if code, _ := do(t, http.MethodPost, noToken.URL+"/api/v1/sync", "Authorization", "Bearer "); code != http.StatusForbidden {
		t.Errorf("sync on a daemon without a token: %d", code)
	}
	if code, _ := do(t, http.MethodPost, noToken.URL+"/webhook"); code != http.StatusNotFound {
		t.Errorf("webhook on a daemon without a secret: %d", code)
	}

	// A webhook with a wrong signature does nothing.
	if code, _ := do(t, http.MethodPost, srv.URL+"/webhook", "X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=00"); code != http.StatusUnauthorized {
		t.Errorf("badly signed webhook: %d", code)
	}
	select {
	case <-r.d.wakeSync:
		t.Error("a badly signed webhook woke the loop")
	default:
	}

	// Checkpoints: taken on request with the token, listed, exported.
	if code, _ := do(t, http.MethodPost, srv.URL+"/api/v1/migrations/base/checkpoints"); code != http.StatusUnauthorized {
		t.Errorf("checkpoint without a token: %d", code)
	}
	code, body = doBody(t, http.MethodPost, srv.URL+"/api/v1/migrations/base/checkpoints", `{"name": "Bad Name"}`, "Authorization", "Bearer t0ken")
	if code != http.StatusBadRequest || !strings.Contains(body, "lowercase letters") {
		t.Errorf("bad checkpoint name: %d %s", code, body)
	}
	code, body = doBody(t, http.MethodPost, srv.URL+"/api/v1/migrations/base/checkpoints", `{"name": "before-25", "description": "known good"}`, "Authorization", "Bearer t0ken")
	if code != http.StatusCreated || !strings.Contains(body, `"description": "known good"`) || strings.Contains(body, `"data"`) {
		t.Errorf("checkpoint: %d %s", code, body)
	}
	code, body = get(t, srv.URL+"/api/v1/migrations/base/checkpoints")
	if code != http.StatusOK || !strings.Contains(body, `"name": "before-25"`) || !strings.Contains(body, `"name": "pre-canary"`) || strings.Contains(body, `"data"`) {
		t.Errorf("checkpoints: %d %s", code, body)
	}
	code, body = get(t, srv.URL+"/api/v1/migrations/base/checkpoints/before-25")
	if code != http.StatusOK || !strings.Contains(body, `"data"`) {
		t.Errorf("export: %d %s", code, body)
	}
	if code, _ := get(t, srv.URL+"/api/v1/migrations/base/checkpoints/nope"); code != http.StatusNotFound {
		t.Errorf("unknown checkpoint: %d", code)
	}
	if code, _ := get(t, srv.URL+"/api/v1/migrations/nope/checkpoints"); code != http.StatusNotFound {
		t.Errorf("checkpoints of an unknown migration: %d", code)
	}

	// Pre-check, with the token, reaches the repository and the
	// workloads, and says no Prometheus answers the plan's query
	// guardrail.
	code, body = get(t, srv.URL+"/api/v1/precheck", "Authorization", "Bearer t0ken")
	for _, want := range []string{`"ok": false`, `"component": "git"`, `"message": "the workloads answer on the default cluster"`, `"subject": "kubernetes (default cluster)"`, `"subject": "candidate"`,
		`"message": "1 guardrails query Prometheus, and no Prometheus is configured"`, `"at": "2026-`} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("precheck lacks %s: %d %s", want, code, body)
		}
	}
	code, body = get(t, srv.URL+"/api/v1/precheck?components=git,workloads", "Authorization", "Bearer t0ken")
	if code != http.StatusOK || !strings.Contains(body, `"ok": true`) || strings.Contains(body, `"component": "prometheus"`) {
		t.Errorf("precheck of git and workloads: %d %s", code, body)
	}
	if code, body := get(t, srv.URL+"/api/v1/precheck?components=dns", "Authorization", "Bearer t0ken"); code != http.StatusBadRequest || !strings.Contains(body, `unknown component \"dns\"`) {
		t.Errorf("unknown component: %d %s", code, body)
	}

	// Verify runs the plan's checks on request, with the token.
	if code, _ := doBody(t, http.MethodPost, srv.URL+"/api/v1/migrations/base/verify", `{}`); code != http.StatusUnauthorized {
		t.Errorf("verify without a token: %d", code)
	}
	code, body = doBody(t, http.MethodPost, srv.URL+"/api/v1/migrations/base/verify", `{"tests": ["integrity"]}`, "Authorization", "Bearer t0ken")
	if code != http.StatusOK || !strings.Contains(body, `"passed": true`) || !strings.Contains(body, `"name": "integrity"`) {
		t.Errorf("verify: %d %s", code, body)
	}
	code, body = doBody(t, http.MethodPost, srv.URL+"/api/v1/migrations/base/verify", `{"tests": ["nope"]}`, "Authorization", "Bearer t0ken")
	if code != http.StatusBadRequest || !strings.Contains(body, `has no check \"nope\"`) {
		t.Errorf("verify of an unknown check: %d %s", code, body)
	}

	// The page shows the migration, its timeline and guardrails.
	code, body = get(t, srv.URL+"/")
	if code != http.StatusOK {
		t.Fatalf("page: %d", code)
	}
	for _, s := range []string{`id="base"`, "canary 10%", `class="step-current"`, "max 0.05 for 5m", "Holding"} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if code, _ := get(t, srv.URL+"/nope"); code != http.StatusNotFound {
		t.Errorf("unknown path: %d", code)
	}
}
