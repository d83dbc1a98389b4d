package daemon

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// TestPageShowsGroupAndGates renders the status page for a member of a
// lockstep group whose next move waits on a gate: the page names the
// group and every gate judged, open or not, with the phase it guards; a
// migration known only from its status shows its waiting reasons.
func TestPageShowsGroupAndGates(t *testing.T) {
	gated := Migration{Name: "substrate", File: "plans/substrate.yaml"}
	gated.Group = "hal9-layers"
	gated.Decision = &Decision{Kind: "Wait", Reason: "waiting for gates", Gates: []reconcile.GateState{
		{PlanGate: plan.PlanGate{Gate: plan.Gate{Plan: "checkout", Reached: "full"}}, Open: true, Reason: "checkout at full: reached full 100% at 2026-11-01T12:00:00Z"},
		{PlanGate: plan.PlanGate{Gate: plan.Gate{Plan: "search", Reached: "canary"}, Phase: "canary"}, Reason: "waiting for search at canary: it stands at start"},
	}}
	quiet := Migration{Name: "protocol", File: "plans/protocol.yaml"}
	quiet.Group = "hal9-layers"
	quiet.Waiting = []string{"waiting for search at canary: it stands at start"}
	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, map[string]any{"Migrations": []Migration{gated, quiet}, "Now": t0}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`<span class="group">group hal9-layers</span>`,
		`<li class="gate-open">✓ before leaving start: checkout at full: reached full 100%`,
		`<li class="gate-closed">⏳ before canary: waiting for search at canary: it stands at start</li>`,
		`<div class="waiting">⏳ waiting for search at canary: it stands at start</div>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
}
