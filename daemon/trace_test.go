package daemon

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/hal9ai/hal9-migrate/store"
	"github.com/hal9ai/hal9-migrate/tracing"
)

// otlpReceiver is an OTLP/HTTP trace receiver on loopback: it decodes each
// export as the protocol's protobuf ExportTraceServiceRequest and keeps
// the spans.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	srv   *httptest.Server
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rc := &otlpReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("not an OTLP/HTTP protobuf export: %s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		data, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			t.Errorf("export does not decode: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rc.spans = append(rc.spans, ss.Spans...)
			}
		}
		rc.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *otlpReceiver) received() []*tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*tracepb.Span(nil), rc.spans...)
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

// TestTracesExported runs the daemon with otlp.endpoint set to a real
// OTLP/HTTP receiver, walks the base plan out of its start, and checks
// that the cycles' spans arrive decoded, nested as the loops nest them,
// with the plan and the action; that the logs made within a step carry its
// trace_id; and that the ring serves the same cycles on the API.
func TestTracesExported(t *testing.T) {
	rc := newOTLPReceiver(t)
	ctx := context.Background()
	tp, err := tracing.New(ctx, tracing.OTLPConfig{Endpoint: rc.srv.URL, Timeout: 5 * time.Second}, tracing.Options{BatchTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Shutdown(ctx)
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(lockedWriter{&logs, &logMu}, nil)))

	r := newRig(t)
	r.d.Tracer, r.d.Traces, r.d.Log, r.d.Runner.Log = tp, tp.Ring, log, log
	r.until(t, 20, func(rec store.Record) bool { return rec.Position.Phase == "canary" })
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	spans := rc.received()
	byID := map[string]*tracepb.Span{}
	names := map[string]int{}
	for _, s := range spans {
		byID[string(s.SpanId)] = s
		names[s.Name]++
	}
	for _, want := range []string{"safety.cycle", "step", "evaluate", "driver.observe", "decide", "apply", "driver.apply",
		"git.sync", "git.fetch", "plans.validate", "git.commit"} {
		if names[want] == 0 {
			t.Errorf("no %s span arrived; got %v", want, names)
		}
	}
	t.Logf("%d spans arrived: %v", len(spans), names)
	parentName := func(s *tracepb.Span) string {
		if p := byID[string(s.ParentSpanId)]; p != nil {
			return p.Name
		}
		return ""
	}
	advanced := false
	for _, s := range spans {
		want := map[string]string{"step": "safety.cycle", "evaluate": "step", "decide": "step", "apply": "step",
			"driver.apply": "apply", "git.fetch": "git.sync", "plans.validate": "git.sync"}[s.Name]
		if want != "" && parentName(s) != want {
			t.Errorf("%s's parent is %q, want %s", s.Name, parentName(s), want)
		}
		if s.Name == "decide" {
			if attr(s, "plan") != "base" || attr(s, "action.kind") == "" || attr(s, "action.reason") == "" {
				t.Errorf("decide without plan, action.kind or reason: %v", s.Attributes)
			}
			if attr(s, "action.kind") == "Advance" && attr(s, "action.to") != "" && attr(s, "action.from") != "" {
				advanced = true
			}
		}
		if s.Name == "evaluate" && attr(s, "guardrail.errors.health") != "Healthy" {
			t.Errorf("evaluate without the errors guardrail's reading: %v", s.Attributes)
		}
	}
	if !advanced {
		t.Error("no decide span of an Advance says where from and to")
	}

	// A log record of a step (the runner's, on a move) names the trace
	// and span it was made in.
	logMu.Lock()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	logMu.Unlock()
	traced := false
	for _, l := range lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil || rec["action"] == nil {
			continue
		}
		id, _ := rec["span_id"].(string)
		for _, s := range spans {
			if id != "" && hexOf(s.SpanId) == id && hexOf(s.TraceId) == rec["trace_id"] {
				traced = true
			}
		}
	}
	if !traced {
		t.Errorf("no log record of an action carries the trace_id and span_id of an exported span:\n%s", strings.Join(lines, "\n"))
	}

	// The ring serves the same cycles.
	srv := httptest.NewServer(r.d.Handler(HTTPOptions{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/traces?limit=3&plan=base")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list TraceList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list.Traces) != 3 {
		t.Fatalf("want 3 traces, got %d", len(list.Traces))
	}
	for _, tr := range list.Traces {
		if tr.Root != "safety.cycle" || len(tr.Spans) < 3 {
			t.Errorf("a trace of plan base is not a safety cycle with its steps: %+v", tr)
		}
	}
	if resp, err := http.Get(srv.URL + "/api/v1/traces?limit=x"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=x: %v %v", resp.StatusCode, err)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
