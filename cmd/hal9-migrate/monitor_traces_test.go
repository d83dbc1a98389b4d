package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/tracing"
)

// TestRenderTraces draws a known trace: children indented under their
// parents in start order, bars placed and sized by time within the trace,
// the action and its positions, and a failed span marked.
func TestRenderTraces(t *testing.T) {
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return at.Add(time.Duration(n) * time.Millisecond) }
	tr := tracing.Trace{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Root: "safety.cycle", Start: at, End: ms(100), Spans: []tracing.Span{
		{SpanID: "a", Name: "safety.cycle", Start: at, End: ms(100)},
		{SpanID: "b", ParentID: "a", Name: "step", Start: ms(0), End: ms(100), Attributes: map[string]string{"plan": "shop"}},
		{SpanID: "d", ParentID: "b", Name: "decide", Start: ms(50), End: ms(50), Attributes: map[string]string{"plan": "shop",
			"action.kind": "Advance", "action.from": "canary 5%", "action.to": "canary 10%", "action.reason": "soaked"}},
		{SpanID: "c", ParentID: "b", Name: "evaluate", Start: ms(0), End: ms(50), Attributes: map[string]string{"plan": "shop"}},
		{SpanID: "e", ParentID: "b", Name: "apply", Start: ms(50), End: ms(100), Failed: true, Error: "driver down"},
	}}
	out := renderTraces([]tracing.Trace{tr}, nil, "http://d", at, 0, false, 112)
	lines := strings.Split(out, "\n")
	var body []string
	for _, l := range lines {
		if strings.HasPrefix(l, "  ") {
			body = append(body, l)
		}
	}
	if len(body) != 5 {
		t.Fatalf("want 5 span lines:\n%s", out)
	}
	for i, want := range []string{"  safety.cycle ", "    step ", "      evaluate ", "      decide ", "      apply "} {
		if !strings.HasPrefix(body[i], want) {
			t.Errorf("line %d is not %q:\n%s", i, want, out)
		}
	}
	bar := func(l string) string { return l[strings.Index(l, "│"):strings.LastIndex(l, "│")] }
	// The bars are 40 wide at width 112: the whole, the first half, a
	// single mark in the middle, the second half.
	if b := bar(body[0]); strings.Count(b, "█") != 40 {
		t.Errorf("the root's bar is not full: %q", b)
	}
	if b := bar(body[2]); strings.Count(b, "█") != 20 || !strings.HasPrefix(b, "│█") {
		t.Errorf("evaluate's bar is not the first half: %q", b)
	}
	if b := bar(body[3]); strings.Count(b, "█") != 1 || strings.Index(b, "█") != len("│")+20 {
		t.Errorf("decide's bar is not one mark in the middle: %q", b)
	}
	if b := bar(body[4]); strings.Count(b, "█") != 20 || !strings.HasSuffix(b, "█") {
		t.Errorf("apply's bar is not the second half: %q", b)
	}
	for _, want := range []string{"safety.cycle  100ms  trace 4bf92f3577b34da6a3ce929d0e0e4736", "shop Advance canary 5% → canary 10% (soaked)", "✗ driver down", "50ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	if out := renderTraces(nil, nil, "http://d", at, 0, false, 100); !strings.Contains(out, "no traces yet") {
		t.Errorf("empty:\n%s", out)
	}
}
