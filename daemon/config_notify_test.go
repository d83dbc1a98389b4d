package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNotificationsConfig(t *testing.T) {
	load := func(t *testing.T, yaml string) (Config, error) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte("repo: file:///plans\n"+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, DefaultConfig())
		if err != nil {
			return cfg, err
		}
		return cfg, cfg.Check()
	}
	cfg, err := load(t, `notifications:
  targets:
  - name: ops
    slack: {webhookURLFile: /etc/hal9-migrate/slack-url}
    events: [rollback, breach, frozen]
    plans: [checkout-*]
    templates: {rollback: ":rotating_light: {{.Plan}} rolled back to {{.To}}: {{.Guardrail}} read {{num .Value}}"}
  - name: audit
    webhook: {url: https://audit.example.com/hal9, secretFile: /etc/hal9-migrate/audit-secret}
    timeout: 5s
    retries: 5
  - name: teams
    teams: {webhookURLFile: /etc/hal9-migrate/teams-url}
  - name: bus
    cloudevents: {url: http://broker-ingress.knative-eventing/default/default, source: /hal9-migrate/prod, mode: structured}
`)
	if err != nil {
		t.Fatal(err)
	}
	ts := cfg.Notifications.Targets
	if len(ts) != 4 || ts[0].Slack == nil || ts[1].Webhook.URL != "https://audit.example.com/hal9" || ts[1].Timeout != 5*time.Second ||
		*ts[1].Retries != 5 || ts[2].Teams == nil || ts[3].CloudEvents.Mode != "structured" {
		t.Fatalf("targets %+v", ts)
	}
	for _, c := range []struct{ yaml, want string }{
		{"notifications: {targets: [{name: a, slack: {webhookURLFile: /f}, events: [rolback]}]}",
			`notifications.targets[0] (a): events: "rolback" is not an event`},
		{"notifications: {targets: [{name: a, slack: {webhookURLFile: /f}, templates: {rollback: '{{.Guardrial}}'}}]}",
			`notifications.targets[0] (a): templates.rollback: template: rollback:1:2: executing "rollback" at <.Guardrial>: can't evaluate field Guardrial`},
		{"notifications: {targets: [{name: a, slack: {webhookURL: https://hooks.slack.com/x}}]}", "field webhookURL not found"},
	} {
		_, err := load(t, c.yaml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.yaml, err, c.want)
		}
	}
}
