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

// TestStatusGroupsAndGates checks that status and monitor list the members
// of a lockstep group together, name the group, and say why a migration
// waits: from the decision's gates when a daemon answers, else from the
// status's waiting reasons.
func TestStatusGroupsAndGates(t *testing.T) {
	at := func(name, group string) daemon.Migration {
		m := daemon.Migration{Name: name}
		m.Phase, m.Target, m.Group = "start", "canary 5%", group
		return m
	}
	ms := []daemon.Migration{at("cognitive", "hal9-layers"), at("orders", ""), at("protocol", "hal9-layers"), at("search", "")}
	ms[0].Waiting = []string{"waiting for checkout at full for 1h: it stands at canary 5%"}
	ms[2].Decision = &daemon.Decision{Kind: "Wait", Reason: "waiting for gates", Gates: []reconcile.GateState{
		{Open: true, Reason: "orders at canary: reached canary 5% at 2026-11-01T12:00:00Z"},
		{Open: false, Reason: "waiting for search at full: it stands at start"},
	}}
	var status bytes.Buffer
	if err := printStatus(&status, "text", ms, false, false); err != nil {
		t.Fatal(err)
	}
	out := status.String()
	for _, want := range []string{
		"MIGRATION  GROUP",
		"\ncognitive  hal9-layers",
		"\nprotocol   hal9-layers",
		"\norders     -",
		"group hal9-layers: cognitive, protocol (lockstep",
		"cognitive:\n  waits: waiting for checkout at full for 1h: it stands at canary 5%\n",
		"  waits: waiting for search at full: it stands at start\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "waits: orders at canary") {
		t.Errorf("status shows an open gate as waiting:\n%s", out)
	}
	// The members follow each other, at the place of the first.
	if c, p, o := strings.Index(out, "\ncognitive "), strings.Index(out, "\nprotocol "), strings.Index(out, "\norders "); !(c < p && p < o) {
		t.Errorf("the members of hal9-layers are not listed together:\n%s", out)
	}
	monitor := renderMonitor(ms, nil, "metrics", "http://daemon", time.Now(), time.Second, false)
	for _, want := range []string{"group hal9-layers: cognitive, protocol (lockstep)", "group hal9-layers\n", "  waits: waiting for search at full"} {
		if !strings.Contains(monitor, want) {
			t.Errorf("monitor lacks %q:\n%s", want, monitor)
		}
	}
}
