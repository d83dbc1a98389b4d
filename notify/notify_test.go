package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// request is one request a receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a real HTTP server on 127.0.0.1 that keeps what it gets and
// answers with status(n), n counting requests from 1.
func receiver(t *testing.T, status func(n int) int) (*httptest.Server, <-chan request) {
	t.Helper()
	ch := make(chan request, 100)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		code := http.StatusOK
		if status != nil {
			code = status(int(n.Add(1)))
		}
		if code/100 == 2 {
			ch <- request{r.Header.Clone(), b}
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func secretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, targets ...TargetConfig) (*Dispatcher, *Metrics) {
	t.Helper()
	m := NewMetrics(nil)
	d, err := New(Config{Targets: targets}, Options{Metrics: m, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, m
}

func wait(t *testing.T, ch <-chan request) request {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request arrived")
	}
	return request{}
}

func rollbackEvent() Event {
	v := 0.083
	return Event{Kind: Rollback, Plan: "checkout-v2", From: "canary 25%", To: "canary 10%", Target: "canary 50%",
		Commit: "0123456789abcdef0123", What: "guardrail error-rate breached", Guardrail: "error-rate", Value: &v, Bound: "max 0.05",
		Reason: "guardrail error-rate breached"}
}

func TestSlack(t *testing.T) {
	srv, got := receiver(t, nil)
	d, m := start(t, TargetConfig{Name: "ops", Slack: &SlackConfig{WebhookURLFile: secretFile(t, srv.URL+"/services/T/B/x")}})
	d.Notify(rollbackEvent())
	r := wait(t, got)
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text struct {
				Type, Text string
			} `json:"text"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(r.body, &msg); err != nil {
		t.Fatal(err)
	}
	if r.header.Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", r.header.Get("Content-Type"))
	}
	if msg.Text != "checkout-v2 rolled back to canary 10%" {
		t.Errorf("text %q", msg.Text)
	}
	if len(msg.Blocks) != 3 || msg.Blocks[0].Type != "header" || msg.Blocks[0].Text.Type != "plain_text" ||
		msg.Blocks[1].Type != "section" || msg.Blocks[1].Text.Type != "mrkdwn" {
		t.Fatalf("blocks %s", r.body)
	}
	want := "checkout-v2 rolled back from canary 25% to canary 10%: guardrail error-rate read 0.083 (bound max 0.05). Commit 0123456789ab."
	if msg.Blocks[1].Text.Text != want {
		t.Errorf("section\n got %q\nwant %q", msg.Blocks[1].Text.Text, want)
	}
	waitCount(t, func() float64 { return testutil.ToFloat64(m.sent.WithLabelValues("ops", "rollback")) }, 1)
}

func TestTeamsAdaptiveCard(t *testing.T) {
	srv, got := receiver(t, nil)
	d, _ := start(t, TargetConfig{Name: "teams", Teams: &TeamsConfig{WebhookURLFile: secretFile(t, srv.URL+"/workflows/x")}})
	d.Notify(rollbackEvent())
	r := wait(t, got)
	var msg struct {
		Type        string `json:"type"`
		Attachments []struct {
			ContentType string  `json:"contentType"`
			ContentURL  *string `json:"contentUrl"`
			Content     struct {
				Schema  string `json:"$schema"`
				Type    string `json:"type"`
				Version string `json:"version"`
				Body    []struct {
					Type  string `json:"type"`
					Text  string `json:"text"`
					Facts []struct{ Title, Value string }
				} `json:"body"`
			} `json:"content"`
		} `json:"attachments"`
	}
	if err := json.Unmarshal(r.body, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Type != "message" || len(msg.Attachments) != 1 {
		t.Fatalf("message %s", r.body)
	}
	a := msg.Attachments[0]
	if a.ContentType != "application/vnd.microsoft.card.adaptive" || a.Content.Type != "AdaptiveCard" || a.Content.Version != "1.4" ||
		a.Content.Schema != "http://adaptivecards.io/schemas/adaptive-card.json" {
		t.Fatalf("card %s", r.body)
	}
	b := a.Content.Body
	if len(b) != 3 || b[0].Type != "TextBlock" || b[0].Text != "checkout-v2 rolled back to canary 10%" || b[2].Type != "FactSet" {
		t.Fatalf("card body %s", r.body)
	}
	facts := map[string]string{}
	for _, f := range b[2].Facts {
		facts[f.Title] = f.Value
	}
	if facts["Guardrail"] != "error-rate" || facts["Value"] != "0.083" || facts["From"] != "canary 25%" {
		t.Errorf("facts %v", facts)
	}
}

// TestWebhookSignature verifies the signature as the README tells a
// receiver to, with crypto/hmac rather than the package's own Verify.
func TestWebhookSignature(t *testing.T) {
	srv, got := receiver(t, nil)
	const secret = "s3cret-for-the-receiver"
	d, _ := start(t, TargetConfig{Name: "hook", Webhook: &WebhookConfig{URL: srv.URL + "/hal9", SecretFile: secretFile(t, secret)}})
	e := rollbackEvent()
	d.Notify(e)
	r := wait(t, got)
	ts := r.header.Get("X-Hal9-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Fatalf("timestamp %q", ts)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(r.body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if sig := r.header.Get("X-Hal9-Signature"); !hmac.Equal([]byte(sig), []byte(want)) {
		t.Fatalf("signature %q, want %q", sig, want)
	}
	if err := Verify([]byte(secret), r.header.Get(SignatureHeader), ts, r.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := Verify([]byte("another"), r.header.Get(SignatureHeader), ts, r.body, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("a wrong secret verified")
	}
	tampered := strings.Replace(string(r.body), "canary 10%", "canary 90%", 1)
	if err := Verify([]byte(secret), r.header.Get(SignatureHeader), ts, []byte(tampered), time.Now(), 5*time.Minute); err == nil {
		t.Fatal("a tampered body verified")
	}
	if err := Verify([]byte(secret), r.header.Get(SignatureHeader), ts, r.body, time.Now().Add(time.Hour), 5*time.Minute); err == nil {
		t.Fatal("a replay an hour later verified")
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body["event"] != "rollback" || body["plan"] != "checkout-v2" || body["guardrail"] != "error-rate" || body["value"] != 0.083 ||
		r.header.Get("X-Hal9-Event") != "rollback" || r.header.Get("X-Hal9-Delivery") == "" {
		t.Errorf("body %s, headers %v", r.body, r.header)
	}
}

// TestCloudEvents decodes what is sent with the SDK's own receiver, in
// both modes.
func TestCloudEvents(t *testing.T) {
	for _, mode := range []string{"binary", "structured"} {
		t.Run(mode, func(t *testing.T) {
			p, err := cloudevents.NewHTTP()
			if err != nil {
				t.Fatal(err)
			}
			events := make(chan cloudevents.Event, 10)
			h, err := cloudevents.NewHTTPReceiveHandler(t.Context(), p, func(e cloudevents.Event) { events <- e })
			if err != nil {
				t.Fatal(err)
			}
			var contentType atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				contentType.Store(r.Header.Get("Content-Type"))
				h.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			d, _ := start(t, TargetConfig{Name: "ce", CloudEvents: &CloudEventsConfig{URL: srv.URL, Source: "/hal9-migrate/prod", Mode: mode}})
			d.Notify(rollbackEvent())
			var e cloudevents.Event
			select {
			case e = <-events:
			case <-time.After(10 * time.Second):
				t.Fatal("no event")
			}
			if err := e.Validate(); err != nil {
				t.Fatal(err)
			}
			if e.SpecVersion() != "1.0" || e.Type() != "ai.hal9.migrate.rollback" || e.Source() != "/hal9-migrate/prod" ||
				e.Subject() != "checkout-v2" || e.ID() == "" || e.Time().IsZero() {
				t.Errorf("attributes %s", e)
			}
			var data map[string]any
			if err := e.DataAs(&data); err != nil {
				t.Fatal(err)
			}
			if data["guardrail"] != "error-rate" || data["to"] != "canary 10%" {
				t.Errorf("data %v", data)
			}
			ct, _ := contentType.Load().(string)
			if mode == "structured" && !strings.HasPrefix(ct, "application/cloudevents+json") || mode == "binary" && ct != "application/json" {
				t.Errorf("%s mode sent content type %q", mode, ct)
			}
		})
	}
}

func TestRetriesThenSuccess(t *testing.T) {
	srv, got := receiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	d, m := start(t, TargetConfig{Name: "hook", Webhook: &WebhookConfig{URL: srv.URL, SecretFile: secretFile(t, "x")}})
	d.Notify(Event{Kind: Completed, Plan: "p", To: "100%"})
	wait(t, got)
	waitCount(t, func() float64 { return testutil.ToFloat64(m.sent.WithLabelValues("hook", "completed")) }, 1)
	if n := testutil.ToFloat64(m.retried.WithLabelValues("hook", "completed")); n != 2 {
		t.Errorf("retried %v times, want 2", n)
	}
	if n := testutil.ToFloat64(m.failed.WithLabelValues("hook", "completed")); n != 0 {
		t.Errorf("failed %v", n)
	}
}

func TestFailuresCounted(t *testing.T) {
	var tries atomic.Int32
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	t.Cleanup(down.Close)
	refuses := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(100)
		w.WriteHeader(http.StatusForbidden)
	}))
	t.Cleanup(refuses.Close)
	two := 2
	d, m := start(t,
		TargetConfig{Name: "down", Webhook: &WebhookConfig{URL: down.URL, SecretFile: secretFile(t, "x")}, Retries: &two},
		TargetConfig{Name: "refuses", Webhook: &WebhookConfig{URL: refuses.URL, SecretFile: secretFile(t, "x")}})
	d.Notify(Event{Kind: Frozen, Plan: "p"})
	waitCount(t, func() float64 { return testutil.ToFloat64(m.failed.WithLabelValues("down", "frozen")) }, 1)
	waitCount(t, func() float64 { return testutil.ToFloat64(m.failed.WithLabelValues("refuses", "frozen")) }, 1)
	// down: 1 + 2 retries; refuses: one try, a 403 is not retried.
	if n := tries.Load(); n != 3+100 {
		t.Errorf("tries %d, want 3 to the one down and 1 (counted 100) to the one refusing", n)
	}
}

// TestHangingReceiver: a receiver that never answers delays neither the
// caller nor the other targets; its queue fills and drops, counted.
func TestHangingReceiver(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	fast, got := receiver(t, nil)
	zero := 0
	d, m := start(t,
		TargetConfig{Name: "hangs", Webhook: &WebhookConfig{URL: hang.URL, SecretFile: secretFile(t, "x")}, Timeout: time.Minute, Retries: &zero, Queue: 2},
		TargetConfig{Name: "fast", Webhook: &WebhookConfig{URL: fast.URL, SecretFile: secretFile(t, "x")}})
	const n = 20
	var slowest time.Duration
	for i := range n {
		e := Event{Kind: Advanced, Plan: "p" + strconv.Itoa(i)}
		began := time.Now()
		d.Notify(e)
		slowest = max(slowest, time.Since(began))
	}
	t.Logf("the slowest of %d hand-offs took %s", n, slowest)
	if slowest > 5*time.Millisecond {
		t.Errorf("a hand-off took %s", slowest)
	}
	for range n {
		wait(t, got)
	}
	// hangs: two queued, one more in flight if its goroutine took it
	// before the queue filled, the rest dropped.
	if v := testutil.ToFloat64(m.dropped.WithLabelValues("hangs", "advanced")); v != n-3 && v != n-2 {
		t.Errorf("hangs dropped %v, want %d or %d", v, n-3, n-2)
	}
	if v := testutil.ToFloat64(m.dropped.WithLabelValues("fast", "advanced")); v != 0 {
		t.Errorf("fast dropped %v", v)
	}
}

func TestRouting(t *testing.T) {
	srv, got := receiver(t, nil)
	d, _ := start(t, TargetConfig{Name: "r", Webhook: &WebhookConfig{URL: srv.URL, SecretFile: secretFile(t, "x")},
		Events: []string{"rollback", "frozen"}, Plans: []string{"checkout-*"}})
	d.Notify(Event{Kind: Advanced, Plan: "checkout-v2"})
	d.Notify(Event{Kind: Rollback, Plan: "billing"})
	d.Notify(Event{Kind: Frozen, Plan: "checkout-v3"})
	r := wait(t, got)
	if !strings.Contains(string(r.body), `"plan":"checkout-v3"`) {
		t.Fatalf("routed %s", r.body)
	}
	select {
	case r := <-got:
		t.Fatalf("also routed %s", r.body)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestTemplateOverride(t *testing.T) {
	srv, got := receiver(t, nil)
	d, _ := start(t, TargetConfig{Name: "s", Slack: &SlackConfig{WebhookURLFile: secretFile(t, srv.URL)},
		Templates: map[string]string{"rollback": ":rotating_light: {{.Plan}} back to {{.To}} ({{.Guardrail}}={{num .Value}})"}})
	d.Notify(rollbackEvent())
	r := wait(t, got)
	if !strings.Contains(string(r.body), `":rotating_light: checkout-v2 back to canary 10% (error-rate=0.083)"`) {
		t.Fatalf("body %s", r.body)
	}
}

func TestConfigErrors(t *testing.T) {
	hook := &WebhookConfig{URL: "https://example.test/x", SecretFile: "/s"}
	for _, c := range []struct {
		t    TargetConfig
		want string
	}{
		{TargetConfig{Webhook: hook}, "notifications.targets[0]: name: set a name"},
		{TargetConfig{Name: "a"}, "no target kind: set one of cloudevents, slack, teams, webhook"},
		{TargetConfig{Name: "a", Webhook: hook, Slack: &SlackConfig{WebhookURLFile: "/f"}}, "slack and webhook both set"},
		{TargetConfig{Name: "a", Webhook: hook, Events: []string{"rolback"}}, `events: "rolback" is not an event; the events are advanced, holding,`},
		{TargetConfig{Name: "a", Webhook: hook, Plans: []string{"["}}, `plans: "[" is not a glob`},
		{TargetConfig{Name: "a", Webhook: hook, Templates: map[string]string{"rollback": "{{.Plan"}}, "(a): templates.rollback: template: rollback:1: unclosed action"},
		{TargetConfig{Name: "a", Webhook: hook, Templates: map[string]string{"rollback": "{{.Guardrial}}"}}, `templates.rollback: template: rollback:1:2: executing "rollback" at <.Guardrial>: can't evaluate field Guardrial`},
		{TargetConfig{Name: "a", Webhook: hook, Templates: map[string]string{"rolback": "x"}}, `templates: "rolback" is not an event`},
		{TargetConfig{Name: "a", Webhook: &WebhookConfig{URL: "ftp://x", SecretFile: "/s"}}, "webhook: url is not an http:// or https:// URL"},
		{TargetConfig{Name: "a", Webhook: &WebhookConfig{URL: "http://x"}}, "webhook: secretFile: name the file"},
		{TargetConfig{Name: "a", Slack: &SlackConfig{}}, "slack: webhookURLFile: name the file"},
		{TargetConfig{Name: "a", CloudEvents: &CloudEventsConfig{URL: "http://x", Mode: "batch"}}, `cloudevents: mode: "batch" is not binary or structured`},
		{TargetConfig{Name: "a", Webhook: hook, Retries: new(int(11))}, "retries: 11 is not within 0..10"},
	} {
		err := Config{Targets: []TargetConfig{c.t}}.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.t, err, c.want)
		}
	}
	if err := (Config{Targets: []TargetConfig{{Name: "a", Webhook: hook}, {Name: "a", Webhook: hook}}}).Check(); err == nil ||
		!strings.Contains(err.Error(), `"a" is used by another target`) {
		t.Errorf("duplicate names: %v", err)
	}
}

// TestSecretsNotInErrors: a Slack URL that cannot be reached is not in the
// error that is logged.
func TestSecretsNotInErrors(t *testing.T) {
	s := slack{url: "http://127.0.0.1:1/services/T000/B000/SECRETTOKEN", client: http.DefaultClient}
	err := s.Send(context.Background(), Message{})
	if err == nil || strings.Contains(err.Error(), "SECRETTOKEN") {
		t.Fatalf("error %v", err)
	}
}

func TestDefaultTexts(t *testing.T) {
	v := 812.0
	for _, c := range []struct {
		e     Event
		title string
		text  string
	}{
		{Event{Kind: Advanced, Plan: "p", From: "canary 10%", To: "canary 25%", Target: "canary 50%", Reason: "soak passed", Commit: "abc"},
			"p advanced to canary 25%", "p moved from canary 10% to canary 25% (target canary 50%): soak passed. Commit abc."},
		{Event{Kind: Breach, Plan: "p", From: "canary 10%", Guardrail: "latency-p99", Value: &v, Bound: "max 500"},
			"p breached guardrail latency-p99, holding at canary 10%",
			"p at canary 10%: guardrail latency-p99 read 812 (bound max 500). Automatic rollback is off: it holds until a commit moves its target. Commit ."},
		{Event{Kind: Rollback, Plan: "p", From: "canary 25%", To: "canary 10%", What: "guardrail error-rate breached", Guardrail: "error-rate", Value: &v, Member: "checkout-db"},
			"p rolled back to canary 10%", "p rolled back from canary 25% to canary 10%: guardrail error-rate read 812 on group member checkout-db. Commit ."},
		{Event{Kind: Frozen, Plan: "p", From: "cutover", What: "job failed"},
			"p frozen at cutover", "p is frozen at cutover, past a point of no return: job failed. Commit ."},
		{Event{Kind: PlanInvalid, Plan: "p", Reason: "the plan is invalid at abc"}, "p: the plan is invalid", "the plan is invalid at abc"},
	} {
		m := defaults.render(c.e)
		if m.Title != c.title || m.Text != c.text {
			t.Errorf("%s:\n got %q / %q\nwant %q / %q", c.e.Kind, m.Title, m.Text, c.title, c.text)
		}
	}
}

func waitCount(t *testing.T, f func() float64, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f() != want {
		if time.Now().After(deadline) {
			t.Fatalf("count %v, want %v", f(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
