package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// TestRingBounds keeps the last traces and a bounded number of spans of
// each, newest first.
func TestRingBounds(t *testing.T) {
	ctx := context.Background()
	p, err := New(ctx, OTLPConfig{}, Options{Traces: 3, SpansPerTrace: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(ctx)
	tr := p.Tracer("test")
	for i := range 5 {
		cctx, root := tr.Start(ctx, fmt.Sprintf("cycle-%d", i))
		for j := range 6 {
			_, s := tr.Start(cctx, fmt.Sprintf("step-%d", j))
			s.End()
		}
		root.End()
	}
	got := p.Ring.Recent(0)
	if len(got) != 3 {
		t.Fatalf("want the last 3 traces, got %d", len(got))
	}
	for i, want := range []string{"cycle-4", "cycle-3", "cycle-2"} {
		// The root ends last: 4 steps are kept, the 2 others and the
		// root are counted as dropped, and the root still names it.
		if got[i].Root != want || len(got[i].Spans) != 4 || got[i].Dropped != 3 {
			t.Errorf("trace %d: root %s, %d spans, %d dropped", i, got[i].Root, len(got[i].Spans), got[i].Dropped)
		}
	}
	if n := len(p.Ring.Recent(2)); n != 2 {
		t.Errorf("Recent(2) gave %d", n)
	}
}

// TestLogHandler adds the span's IDs to records made within it, and
// nothing to others.
func TestLogHandler(t *testing.T) {
	ctx := context.Background()
	p, _ := New(ctx, OTLPConfig{}, Options{})
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("daemon", "x")
	sctx, span := p.Tracer("test").Start(ctx, "step")
	log.InfoContext(sctx, "within")
	span.End()
	log.InfoContext(ctx, "outside")
	dec := json.NewDecoder(&buf)
	var in, out map[string]any
	if err := dec.Decode(&in); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] != span.SpanContext().SpanID().String() || in["daemon"] != "x" {
		t.Errorf("within a span: %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Errorf("outside a span: %v", out)
	}
}

// grpcReceiver is a real OTLP/gRPC trace service.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
}

func (g *grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				g.names = append(g.names, s.Name)
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestExportGRPC exports to a gRPC collector service on loopback.
func TestExportGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	rc := &grpcReceiver{}
	coltracepb.RegisterTraceServiceServer(srv, rc)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	ctx := context.Background()
	p, err := New(ctx, OTLPConfig{Endpoint: ln.Addr().String(), Protocol: "grpc", Insecure: true, Timeout: 5 * time.Second},
		Options{BatchTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer("test").Start(ctx, "safety.cycle")
	span.End()
	if err := p.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	p.Shutdown(ctx)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.names) != 1 || rc.names[0] != "safety.cycle" {
		t.Errorf("received %v", rc.names)
	}
}

// TestExportNeverBlocks: a collector that does not answer costs the
// caller nothing; spans wait in the bounded queue or are dropped.
func TestExportNeverBlocks(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // accepts nothing: every export hangs until its timeout
	ctx := context.Background()
	p, err := New(ctx, OTLPConfig{Endpoint: "http://" + ln.Addr().String(), Timeout: 200 * time.Millisecond},
		Options{QueueSize: 16, BatchTimeout: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 10000 {
		_, s := p.Tracer("test").Start(ctx, "x")
		s.End()
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("10,000 spans took %s with the collector hung", took)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = p.Shutdown(sctx)
}

func TestCheck(t *testing.T) {
	for _, c := range []OTLPConfig{{Protocol: "udp"}, {Timeout: -1}, {HeadersFile: "h"}, {RecentTraces: -1}, {RecentTraces: MaxRingTraces + 1}, {SpansPerTrace: MaxRingSpans + 1}} {
		if c.Check() == nil {
			t.Errorf("%+v passed", c)
		}
	}
	if err := (OTLPConfig{Endpoint: "localhost:4317", Protocol: "grpc", RecentTraces: 256, SpansPerTrace: 2048}).Check(); err != nil {
		t.Error(err)
	}
}
