package daemon

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/hal9ai/hal9-migrate/tracing"
)

// tracerName names the daemon's spans' instrumentation scope.
const tracerName = "github.com/hal9ai/hal9-migrate/daemon"

// startSpan starts a span of the daemon's: a new trace for each cycle of a
// loop (safety.cycle, git.sync, git.commit), whose children reconcile and
// guardrails add through the context. Without a Tracer it is a no-op.
func (d *Daemon) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	tp := d.Tracer
	if tp == nil {
		if trace.SpanFromContext(ctx).SpanContext().IsValid() {
			tp = trace.SpanFromContext(ctx).TracerProvider()
		} else {
			tp = noop.NewTracerProvider()
		}
	}
	return tp.Tracer(tracerName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// spanError marks span failed with err; nil does nothing.
func spanError(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// TraceList is what GET /api/v1/traces answers: the recent traces from the
// daemon's ring, newest first.
type TraceList struct {
	Traces []tracing.Trace `json:"traces"`
}

// traces answers GET /api/v1/traces[?limit=N][&plan=NAME]: the last N
// traces (20 by default), or the last N with a span of plan NAME.
func (d *Daemon) traces(w http.ResponseWriter, r *http.Request) {
	n := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			apiError(w, http.StatusBadRequest, "limit: not a positive number: "+s)
			return
		}
		n = v
	}
	only := r.URL.Query().Get("plan")
	out := TraceList{Traces: []tracing.Trace{}}
	for _, t := range d.Traces.Recent(0) {
		if len(out.Traces) == n {
			break
		}
		if only != "" && !slices.ContainsFunc(t.Spans, func(s tracing.Span) bool { return s.Attributes["plan"] == only }) {
			continue
		}
		out.Traces = append(out.Traces, t)
	}
	writeJSON(w, http.StatusOK, out)
}
