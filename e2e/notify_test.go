package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/notify"
)

// receiver is an HTTP receiver of notifications on 127.0.0.1 that keeps
// what it was sent.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []received
}

type received struct {
	at     time.Time
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		rc.mu.Lock()
		rc.got = append(rc.got, received{time.Now(), r.Header.Clone(), body})
		rc.mu.Unlock()
		if handle != nil {
			handle(w, r)
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// TestNotificationsOfARollback: the assembled daemon notifies a signed
// JSON webhook and a CloudEvents receiver of the migration's advances and
// of its rollback, naming the guardrail and its value, while a third
// receiver that never answers delays neither them nor the rollback.
func TestNotificationsOfARollback(t *testing.T) {
	t.Parallel()
	secret := "e2e-notify-secret"
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hook := newReceiver(t, nil)
	events := newReceiver(t, nil)
	release := make(chan struct{})
	hang := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	extra := fmt.Sprintf(`notifications:
  targets:
  - name: audit
    webhook: {url: %s/hook, secretFile: %s}
  - name: bus
    cloudevents: {url: %s/events, source: /hal9-migrate/e2e}
  - name: stuck
    webhook: {url: %s/never, secretFile: %s}
    timeout: 30s
    retries: 1
`, hook.srv.URL, secretFile, events.srv.URL, hang.srv.URL, secretFile)
	e, d := walkEnv(t, walkPlan{target: 30, forWin: "2s"}, extra)

	// The advances are told, each once.
	waitFor(t, 30*time.Second, "the advances notified", func() bool {
		return countEvents(t, hook, "advanced") >= 2 && countEvents(t, hook, "holding") >= 1
	})
	faulted := time.Now()
	e.set(t, e.candidate, map[string]string{"errorRate": "1"})
	d.wait(t, "shop", time.Minute, "rolled back", func(m daemon.Migration) bool { return m.State == "RolledBack" })
	took := time.Since(faulted)
	t.Logf("rolled back %s after the fault, with a receiver that never answers", took.Round(10*time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("the rollback took %s: a receiver that never answers must not delay it", took)
	}
	waitFor(t, 30*time.Second, "the rollback notified to the webhook", func() bool { return countEvents(t, hook, "rollback") >= 1 })
	for _, r := range hook.all() {
		if err := notify.Verify([]byte(secret), r.header.Get("X-Hal9-Signature"), r.header.Get("X-Hal9-Timestamp"), r.body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("a webhook delivery does not verify: %v\n%s", err, r.body)
		}
		var ev map[string]any
		if err := json.Unmarshal(r.body, &ev); err != nil {
			t.Fatalf("webhook body: %v\n%s", err, r.body)
		}
		if ev["event"] == "rollback" {
			if ev["plan"] != "shop" || ev["guardrail"] != "errors" || ev["from"] != "canary 30%" || ev["to"] != "canary 10%" {
				t.Errorf("rollback notification: %s", r.body)
			}
			if v, ok := ev["value"].(float64); !ok || v <= 0.2 {
				t.Errorf("rollback notification without the value past the bound: %s", r.body)
			}
		}
	}
	// The CloudEvents receiver got the same transitions, as CloudEvents.
	waitFor(t, 30*time.Second, "the rollback as a CloudEvent", func() bool {
		for _, r := range events.all() {
			if r.header.Get("Ce-Type") == "ai.hal9.migrate.rollback" {
				return true
			}
		}
		return false
	})
	for _, r := range events.all() {
		if r.header.Get("Ce-Specversion") != "1.0" || r.header.Get("Ce-Source") != "/hal9-migrate/e2e" || r.header.Get("Ce-Subject") != "shop" || r.header.Get("Ce-Id") == "" {
			t.Errorf("a CloudEvent's attributes: %v", r.header)
		}
	}
	if n := len(hang.all()); n == 0 {
		t.Error("the receiver that never answers was never called")
	}
}

// countEvents counts the webhook deliveries of an event kind.
func countEvents(t *testing.T, rc *receiver, kind string) int {
	t.Helper()
	n := 0
	for _, r := range rc.all() {
		var ev struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(r.body, &ev) == nil && ev.Event == kind {
			n++
		}
	}
	return n
}
