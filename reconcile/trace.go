package reconcile

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names the runner's spans' instrumentation scope.
const tracerName = "github.com/hal9ai/hal9-migrate/reconcile"

// startSpan starts a span under the one in ctx, with the tracer provider
// of that span: a cycle the daemon traces is traced down to its driver
// calls, and anything else costs a no-op span.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName).Start(ctx, name, trace.WithAttributes(attrs...))
}

// spanError marks span failed with err; nil does nothing.
func spanError(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// readingAttributes puts each guardrail's reading on span:
// guardrail.NAME.health, .value and, when there is one, .detail.
func readingAttributes(span trace.Span, rs []Reading) {
	if !span.IsRecording() {
		return
	}
	for _, g := range rs {
		k := "guardrail." + g.Name
		span.SetAttributes(attribute.String(k+".health", string(g.Health)), attribute.String(k+".value", fmt.Sprint(g.Value)))
		if g.Detail != "" {
			span.SetAttributes(attribute.String(k+".detail", g.Detail))
		}
	}
}
