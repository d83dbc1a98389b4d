package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/tracing"
)

// tracesShown is how many traces a frame of the traces dashboard shows.
const tracesShown = 6

// fetchTraces reads the daemon's recent traces, those of plan only when it
// is set.
func fetchTraces(ctx context.Context, base, only string) ([]tracing.Trace, error) {
	var list daemon.TraceList
	path := fmt.Sprintf("/api/v1/traces?limit=%d", tracesShown)
	if only != "" {
		path += "&plan=" + url.QueryEscape(only)
	}
	c := &client{base: strings.TrimRight(base, "/")}
	if err := c.do(ctx, "GET", path, nil, &list); err != nil {
		return nil, err
	}
	return list.Traces, nil
}

// traceWidth is the width of out when it is a terminal, else 100.
func traceWidth(out io.Writer) int {
	if f, ok := out.(*os.File); ok {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w >= 60 {
			return w
		}
	}
	return 100
}

// renderTraces draws one frame of the traces dashboard: each trace, newest
// first, as a timeline of its spans, a child indented under its parent,
// each with a bar placed and sized by its time within the trace.
func renderTraces(ts []tracing.Trace, fetchErr error, url string, now time.Time, every time.Duration, interactive bool, width int) string {
	var b strings.Builder
	if !monitorHeading(&b, "traces · "+url, fetchErr, now, every, interactive) {
		return b.String()
	}
	if len(ts) == 0 {
		b.WriteString("no traces yet: the daemon keeps its recent cycles once it has run one\n")
		return b.String()
	}
	const nameWidth = 30
	barWidth := max(10, min(50, width-nameWidth-12-30))
	for _, t := range ts {
		total := t.End.Sub(t.Start)
		fmt.Fprintf(&b, "%s  %s  %s  trace %s\n", t.Start.UTC().Format("15:04:05.000"), t.Root, round(total), t.TraceID)
		for _, l := range spanLines(t) {
			s := l.span
			name := strings.Repeat("  ", l.depth) + s.Name
			if len(name) > nameWidth {
				name = name[:nameWidth-1] + "…"
			}
			mark := ""
			if s.Failed {
				mark = "  ✗ " + s.Error
			}
			fmt.Fprintf(&b, "  %-*s %s %9s  %s%s\n", nameWidth, name, timeBar(t.Start, total, s, barWidth), round(s.Duration()), spanNote(s), mark)
		}
		if t.Dropped > 0 {
			fmt.Fprintf(&b, "  … %d spans more than the daemon keeps of one trace\n", t.Dropped)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

type spanLine struct {
	span  tracing.Span
	depth int
}

// spanLines orders a trace's spans depth first, each parent before its
// children, siblings by start; a span whose parent is not in the ring
// starts a tree of its own.
func spanLines(t tracing.Trace) []spanLine {
	ids := map[string]bool{}
	for _, s := range t.Spans {
		ids[s.SpanID] = true
	}
	children := map[string][]tracing.Span{}
	var roots []tracing.Span
	for _, s := range t.Spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
			continue
		}
		children[s.ParentID] = append(children[s.ParentID], s)
	}
	byStart := func(a, b tracing.Span) int { return a.Start.Compare(b.Start) }
	slices.SortStableFunc(roots, byStart)
	var out []spanLine
	var walk func(s tracing.Span, depth int)
	walk = func(s tracing.Span, depth int) {
		out = append(out, spanLine{s, depth})
		cs := children[s.SpanID]
		slices.SortStableFunc(cs, byStart)
		for _, c := range cs {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return out
}

// timeBar is s's place within a trace that started at start and took
// total, width characters wide: blank before it, █ while it ran (one at
// least).
func timeBar(start time.Time, total time.Duration, s tracing.Span, width int) string {
	if total <= 0 {
		return "│" + strings.Repeat("█", width) + "│"
	}
	from := int(float64(s.Start.Sub(start)) / float64(total) * float64(width))
	n := int(float64(s.Duration())/float64(total)*float64(width) + 0.5)
	from = max(0, min(width-1, from))
	n = max(1, min(width-from, n))
	return "│" + strings.Repeat(" ", from) + strings.Repeat("█", n) + strings.Repeat(" ", width-from-n) + "│"
}

// spanNote is the few attributes worth a glance: the plan, the action and
// where it goes, the guardrail measured and its value, a sync's head.
func spanNote(s tracing.Span) string {
	a := s.Attributes
	var parts []string
	for _, k := range []string{"plan", "group", "guardrail", "action.kind", "commit.kind", "head"} {
		if v := a[k]; v != "" {
			parts = append(parts, v)
		}
	}
	if a["action.to"] != "" {
		parts = append(parts, a["action.from"]+" → "+a["action.to"])
	}
	if a["guardrail"] != "" && a["value"] != "" {
		parts = append(parts, "= "+a["value"])
	}
	if r := a["action.reason"]; r != "" {
		if len(r) > 60 {
			r = r[:59] + "…"
		}
		parts = append(parts, "("+r+")")
	}
	return strings.Join(parts, " ")
}

// round shows d to a useful precision.
func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
