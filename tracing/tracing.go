// Package tracing gives the daemon its OpenTelemetry traces: a tracer
// provider that keeps the recent traces in memory (Ring), for the API and
// `monitor --dashboard traces`, and exports them with OTLP when an
// endpoint is configured; and a slog handler that puts the trace and span
// IDs on the log records made within a span.
//
// Nothing here waits on the tracing backend in the caller's path: spans are
// handed to a batch processor whose queue is bounded and drops when full,
// and whose exports run in the background, each within the exporter's
// timeout.
package tracing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// OTLPConfig is where and how traces are exported (the daemon
// configuration's `otlp:` block). An empty Endpoint exports nothing: the
// traces are kept in the daemon's ring alone.
type OTLPConfig struct {
	// Endpoint is the collector's address: a URL (http://host:4318,
	// https://host:4317), or HOST:PORT. A URL with a path is used as it
	// is for OTLP/HTTP; without one, /v1/traces is added.
	Endpoint string `yaml:"endpoint"`
	// Protocol is http (OTLP/HTTP with protobuf, the default) or grpc.
	Protocol string `yaml:"protocol"`
	// Insecure sends in clear text to a HOST:PORT endpoint (a URL says so
	// by its scheme).
	Insecure bool `yaml:"insecure"`
	// HeadersFile holds headers sent with every export, one "Name: value"
	// a line (an API key, say): a file, as every secret is.
	HeadersFile string `yaml:"headersFile"`
	// Timeout bounds one export (default DefaultTimeout).
	Timeout time.Duration `yaml:"timeout"`
	// RecentTraces and SpansPerTrace bound the ring of recent traces the
	// API and `monitor --dashboard traces` show, exported or not
	// (DefaultRingTraces, DefaultRingSpans; at most MaxRingTraces and
	// MaxRingSpans).
	RecentTraces  int `yaml:"recentTraces"`
	SpansPerTrace int `yaml:"spansPerTrace"`
}

// The ring's bounds at most: about 64 MiB of spans.
const (
	MaxRingTraces = 4096
	MaxRingSpans  = 65536
)

// DefaultTimeout bounds one export when OTLPConfig sets none.
const DefaultTimeout = 10 * time.Second

// Check reports the first setting that cannot work.
func (c OTLPConfig) Check() error {
	switch {
	case c.Protocol != "" && c.Protocol != "http" && c.Protocol != "grpc":
		return fmt.Errorf("otlp.protocol: %q is not one of http, grpc", c.Protocol)
	case c.Timeout < 0:
		return fmt.Errorf("otlp.timeout: %s is negative", c.Timeout)
	case c.Endpoint == "" && c.HeadersFile != "":
		return errors.New("otlp.headersFile is set but otlp.endpoint is not")
	case c.RecentTraces < 0 || c.RecentTraces > MaxRingTraces:
		return fmt.Errorf("otlp.recentTraces: %d is not between 0 (the default, %d) and %d", c.RecentTraces, DefaultRingTraces, MaxRingTraces)
	case c.SpansPerTrace < 0 || c.SpansPerTrace > MaxRingSpans:
		return fmt.Errorf("otlp.spansPerTrace: %d is not between 0 (the default, %d) and %d", c.SpansPerTrace, DefaultRingSpans, MaxRingSpans)
	}
	return nil
}

// Options are the provider's: its ring's bounds and the batch processor's.
type Options struct {
	// Traces and SpansPerTrace bound the ring (DefaultRingTraces,
	// DefaultRingSpans).
	Traces, SpansPerTrace int
	// QueueSize bounds the spans waiting for export; more are dropped
	// (2048 by default). BatchTimeout is how long a batch waits to fill
	// (5s by default).
	QueueSize    int
	BatchTimeout time.Duration
	// Version is the service's version, a resource attribute.
	Version string
}

// Provider is the daemon's tracer provider and the ring it keeps.
type Provider struct {
	*sdktrace.TracerProvider
	Ring *Ring
	// Exporting says whether spans go to an OTLP endpoint.
	Exporting bool
}

// New returns a provider that keeps the recent traces in a ring and, when
// cfg names an endpoint, exports them with OTLP in the background. Creating
// the exporter does not connect: a collector that is down only loses
// spans. Shut it down to flush what is queued.
func New(ctx context.Context, cfg OTLPConfig, o Options) (*Provider, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	ring := NewRing(o.Traces, o.SpansPerTrace)
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		attribute.String("service.name", "hal9-migrate"),
		attribute.String("service.version", o.Version)))
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSpanProcessor(ring)}
	p := &Provider{Ring: ring}
	if cfg.Endpoint != "" {
		exp, err := exporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
		queue := o.QueueSize
		if queue <= 0 {
			queue = sdktrace.DefaultMaxQueueSize
		}
		batch := o.BatchTimeout
		if batch <= 0 {
			batch = sdktrace.DefaultScheduleDelay * time.Millisecond
		}
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		// Never WithBlocking: a full queue drops spans rather than make
		// the safety loop wait.
		opts = append(opts, sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(queue),
			sdktrace.WithBatchTimeout(batch), sdktrace.WithExportTimeout(timeout)))
		p.Exporting = true
	}
	p.TracerProvider = sdktrace.NewTracerProvider(opts...)
	return p, nil
}

func exporter(ctx context.Context, cfg OTLPConfig) (sdktrace.SpanExporter, error) {
	headers, err := readHeaders(cfg.HeadersFile)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	url := strings.Contains(cfg.Endpoint, "://")
	if cfg.Protocol == "grpc" {
		o := []otlptracegrpc.Option{otlptracegrpc.WithTimeout(timeout), otlptracegrpc.WithHeaders(headers)}
		if url {
			o = append(o, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		} else {
			o = append(o, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		}
		if cfg.Insecure {
			o = append(o, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, o...)
		if err != nil {
			return nil, fmt.Errorf("otlp grpc exporter: %w", err)
		}
		return exp, nil
	}
	o := []otlptracehttp.Option{otlptracehttp.WithTimeout(timeout), otlptracehttp.WithHeaders(headers)}
	if url {
		u, err := neturl.Parse(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("otlp.endpoint: %w", err)
		}
		if u.Path == "" || u.Path == "/" {
			// The collector's address alone, as people write it: the
			// signal's path is the protocol's.
			u.Path = "/v1/traces"
		}
		o = append(o, otlptracehttp.WithEndpointURL(u.String()))
	} else {
		o = append(o, otlptracehttp.WithEndpoint(cfg.Endpoint))
	}
	if cfg.Insecure {
		o = append(o, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, o...)
	if err != nil {
		return nil, fmt.Errorf("otlp http exporter: %w", err)
	}
	return exp, nil
}

// readHeaders reads "Name: value" lines; blank lines and lines starting
// with # are skipped.
func readHeaders(file string) (map[string]string, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("otlp headers: %w", err)
	}
	h := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("otlp headers %s:%d: not Name: value", file, n)
		}
		h[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	return h, sc.Err()
}

// Tracer returns the tracer named name of the span in ctx's provider: a
// no-op one when ctx carries no span. The packages the daemon calls into
// (reconcile, guardrails) trace this way, so that they need no wiring and
// cost next to nothing outside a traced cycle.
func Tracer(ctx context.Context, name string) trace.Tracer {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(name)
}

// Error records err on span and marks it failed; nil does nothing.
func Error(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
