package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/notify"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// TestNotifications runs the daemon to its target, breaches a guardrail
// with the rollback's push refused, and checks what a signed webhook on
// 127.0.0.1 received: each transition once, the rollback naming the
// guardrail and its value, and the rollback not committed.
func TestNotifications(t *testing.T) {
	const secret = "receiver-secret"
	got := make(chan map[string]any, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.SignatureHeader), r.Header.Get(notify.TimestampHeader),
			body, time.Now(), time.Minute); err != nil {
			t.Errorf("verify: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Error(err)
		}
		got <- m
	}))
	defer srv.Close()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := notify.New(notify.Config{Targets: []notify.TargetConfig{{Name: "hook",
		Webhook: &notify.WebhookConfig{URL: srv.URL, SecretFile: secretFile}}}}, notify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	r := newRig(t)
	r.d.Notify = n
	git := &rejectingRollbacks{Git: r.d.Git, reject: true}
	r.d.Git = git
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
	r.guards.readings = []reconcile.Reading{{Name: "errors", Health: reconcile.Breached, Value: 0.2, Bound: "> 0.05 for 5m"},
		{Name: "health", Health: reconcile.Healthy}}
	if err := r.d.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The next step, healthy, with the push still refused, tells nothing
	// new: the condition still stands.
	r.guards.readings = healthy()
	if err := r.d.Step(context.Background()); err != nil {
		t.Fatal(err)
	}

	var events []map[string]any
	count := map[string]int{}
	deadline := time.After(10 * time.Second)
	for count["rollbackNotCommitted"] == 0 {
		select {
		case m := <-got:
			events = append(events, m)
			count[m["event"].(string)]++
		case <-deadline:
			t.Fatalf("no rollbackNotCommitted; got %v", events)
		}
	}
	// Anything else queued arrives within a moment.
	for quiet := false; !quiet; {
		select {
		case m := <-got:
			events = append(events, m)
			count[m["event"].(string)]++
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	for _, m := range events {
		t.Logf("%s: %s", m["event"], m["text"])
	}
	if count["advanced"] == 0 || count["holding"] != 1 || count["rollback"] != 1 || count["rollbackNotCommitted"] != 1 {
		t.Errorf("events %v", count)
	}
	for _, m := range events {
		if m["event"] != "rollback" {
			continue
		}
		if m["guardrail"] != "errors" || m["value"] != 0.2 || m["plan"] != "base" || m["from"] != "canary 10%" || m["to"] != "canary 5%" {
			t.Errorf("rollback %v", m)
		}
		want := "base rolled back from canary 10% to canary 5%: guardrail errors read 0.2 (bound > 0.05 for 5m)."
		if text, _ := m["text"].(string); len(text) < len(want) || text[:len(want)] != want {
			t.Errorf("rollback text %q", m["text"])
		}
	}
}

// told records the events a daemon notifies.
type told struct{ events []notify.Event }

func (t *told) Notify(e notify.Event) { t.events = append(t.events, e) }

func (t *told) count(kind notify.EventKind) int {
	n := 0
	for _, e := range t.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// TestStandingConditionNotToldAgain: a plan made invalid is told once;
// a restarted daemon, finding the condition in the status file it
// committed, does not tell it again, and tells the plan valid again as an
// advance when a person mends it.
func TestStandingConditionNotToldAgain(t *testing.T) {
	r := newRig(t)
	n := &told{}
	r.d.Notify = n
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
	r.person(t, "break the plan", func(s string) string { return strings.Replace(s, "spec:\n", "spec:\n  bogus: 1\n", 1) })
	r.steps(t, 2)
	if c := n.count(notify.PlanInvalid); c != 1 {
		t.Fatalf("planInvalid told %d times, want once: %+v", c, n.events)
	}
	if st := gittest.Git(t, r.remote, "show", "main:status/base.yaml"); !strings.Contains(st, "type: PlanInvalid") {
		t.Fatalf("status file:\n%s", st)
	}
	r.restart(r.d.Git)
	after := &told{}
	r.d.Notify = after
	r.steps(t, 2)
	if c := after.count(notify.PlanInvalid); c != 0 {
		t.Errorf("after a restart planInvalid was told again %d times: %+v", c, after.events)
	}
}
