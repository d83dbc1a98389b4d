package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// TestGuardrailValuesRounded checks that status --detailed and monitor show
// a guardrail's value in four significant digits, as rollback reasons do,
// and not as float arithmetic left it.
func TestGuardrailValuesRounded(t *testing.T) {
	m := daemon.Migration{Name: "shop", Guardrails: []reconcile.Reading{
		{Name: "error-rate", Health: reconcile.Healthy, Value: 0.0049499999999999995, Bound: "max 0.05"},
		{Name: "requests", Health: reconcile.Healthy, Value: 1234567.8, Bound: "min 10"},
	}}
	m.Phase, m.Percentage, m.Target = "canary", 10, "canary 10%"
	var status bytes.Buffer
	if err := printStatus(&status, "text", []daemon.Migration{m}, true, true); err != nil {
		t.Fatal(err)
	}
	monitor := renderMonitor([]daemon.Migration{m}, nil, "metrics", "http://daemon", time.Now(), time.Second, false)
	for name, out := range map[string]string{"status --detailed": status.String(), "monitor": monitor} {
		for _, want := range []string{"0.00495", "1.235e+06"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s lacks %s:\n%s", name, want, out)
			}
		}
		if strings.Contains(out, "0.004949") || strings.Contains(out, "1234567") {
			t.Errorf("%s shows unrounded values:\n%s", name, out)
		}
	}
}
