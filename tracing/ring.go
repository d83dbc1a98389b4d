package tracing

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Bounds of a Ring when NewRing is given none.
const (
	DefaultRingTraces = 64
	DefaultRingSpans  = 512
	// maxAttrLen bounds one attribute's value as the ring keeps it.
	maxAttrLen = 256
)

// Span is one finished span as the ring keeps it, and as the API shows it.
type Span struct {
	SpanID     string            `json:"spanId"`
	ParentID   string            `json:"parentId,omitempty"`
	Name       string            `json:"name"`
	Start      time.Time         `json:"start"`
	End        time.Time         `json:"end"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Error is the span's status description when it failed.
	Error  string `json:"error,omitempty"`
	Failed bool   `json:"failed,omitempty"`
}

// Duration is how long the span took.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// Trace is the finished spans of one trace, in the order they started.
type Trace struct {
	TraceID string `json:"traceId"`
	// Root is the name of the span without a parent in the trace (the
	// earliest span while the root has not ended).
	Root  string    `json:"root"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Spans []Span    `json:"spans"`
	// Dropped counts the spans past the ring's bound per trace.
	Dropped int `json:"dropped,omitempty"`
}

// Ring is a span processor that keeps the spans of the last traces in
// memory, bounded both in traces and in spans per trace: the daemon's
// recent cycles, without a tracing backend. It is safe for concurrent use;
// OnEnd copies what it keeps and takes a short lock.
type Ring struct {
	maxTraces, maxSpans int

	mu     sync.Mutex
	order  []trace.TraceID // first seen, oldest first
	traces map[trace.TraceID]*Trace
}

var _ sdktrace.SpanProcessor = (*Ring)(nil)

// NewRing returns a ring of at most traces traces of at most spans spans
// each (the defaults for 0).
func NewRing(traces, spans int) *Ring {
	if traces <= 0 {
		traces = DefaultRingTraces
	}
	if spans <= 0 {
		spans = DefaultRingSpans
	}
	return &Ring{maxTraces: traces, maxSpans: spans, traces: map[trace.TraceID]*Trace{}}
}

// OnStart does nothing: spans are kept once they end.
func (r *Ring) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd keeps s.
func (r *Ring) OnEnd(s sdktrace.ReadOnlySpan) {
	sc := s.SpanContext()
	sp := Span{SpanID: sc.SpanID().String(), Name: s.Name(), Start: s.StartTime(), End: s.EndTime()}
	if p := s.Parent(); p.IsValid() && p.TraceID() == sc.TraceID() {
		sp.ParentID = p.SpanID().String()
	}
	if attrs := s.Attributes(); len(attrs) > 0 {
		sp.Attributes = make(map[string]string, len(attrs))
		for _, kv := range attrs {
			v := kv.Value.Emit()
			if len(v) > maxAttrLen {
				v = v[:maxAttrLen] + "…"
			}
			sp.Attributes[string(kv.Key)] = v
		}
	}
	if st := s.Status(); st.Code == codes.Error {
		sp.Failed, sp.Error = true, st.Description
	}
	id := sc.TraceID()
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.traces[id]
	if !ok {
		t = &Trace{TraceID: id.String(), Root: sp.Name, Start: sp.Start, End: sp.End}
		r.traces[id] = t
		r.order = append(r.order, id)
		for len(r.order) > r.maxTraces {
			delete(r.traces, r.order[0])
			r.order = r.order[1:]
		}
	}
	if sp.ParentID == "" {
		t.Root = sp.Name
	}
	if len(t.Spans) >= r.maxSpans {
		t.Dropped++
		return
	}
	t.Spans = append(t.Spans, sp)
	if sp.Start.Before(t.Start) {
		t.Start = sp.Start
	}
	if sp.End.After(t.End) {
		t.End = sp.End
	}
}

// Shutdown and ForceFlush have nothing to do.
func (r *Ring) Shutdown(context.Context) error   { return nil }
func (r *Ring) ForceFlush(context.Context) error { return nil }

// Recent returns copies of the last n traces (all for n <= 0), newest
// first, each with its spans in the order they started.
func (r *Ring) Recent(n int) []Trace {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n <= 0 || n > len(r.order) {
		n = len(r.order)
	}
	out := make([]Trace, 0, n)
	for i := len(r.order) - 1; i >= 0 && len(out) < n; i-- {
		t := *r.traces[r.order[i]]
		t.Spans = slices.Clone(t.Spans)
		slices.SortStableFunc(t.Spans, func(a, b Span) int { return a.Start.Compare(b.Start) })
		out = append(out, t)
	}
	return out
}
