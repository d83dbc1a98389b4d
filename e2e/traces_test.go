package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/hal9ai/hal9-migrate/daemon"
)

// TestTracesOfTheAssembledDaemon: the daemon, with otlp.endpoint set,
// exports its cycles over OTLP/HTTP to a receiver that decodes the
// protocol: a safety cycle with a step per plan, the decision with its
// action, the guardrails' measurements, the Git loop's syncs. Its logs
// carry the trace ids, and `monitor --dashboard traces` draws the recent
// cycles from the daemon's own ring.
func TestTracesOfTheAssembledDaemon(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	extra := fmt.Sprintf("otlp: {endpoint: %s, protocol: http, insecure: true, timeout: 2s}\n", strings.TrimPrefix(rc.srv.URL, "http://"))
	_, d := walkEnv(t, walkPlan{target: 30}, extra)
	d.wait(t, "shop", time.Minute, "at 30%", func(m daemon.Migration) bool { return m.Position == pos(30) })

	spans := func() []*tracepb.Span {
		var out []*tracepb.Span
		for _, r := range rc.all() {
			body := r.body
			if r.header.Get("Content-Encoding") == "gzip" {
				gz, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("an export that is not gzip: %v", err)
				}
				if body, err = io.ReadAll(gz); err != nil {
					t.Fatal(err)
				}
			}
			var req coltracepb.ExportTraceServiceRequest
			if err := proto.Unmarshal(body, &req); err != nil {
				t.Fatalf("an export that does not decode as OTLP: %v", err)
			}
			for _, rs := range req.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					out = append(out, ss.Spans...)
				}
			}
		}
		return out
	}
	attr := func(s *tracepb.Span, key string) string {
		for _, kv := range s.Attributes {
			if kv.Key == key {
				return kv.Value.GetStringValue()
			}
		}
		return ""
	}
	var got []*tracepb.Span
	waitFor(t, 30*time.Second, "the daemon's spans at the receiver", func() bool {
		got = spans()
		names := map[string]bool{}
		for _, s := range got {
			names[s.Name] = true
		}
		return names["safety.cycle"] && names["step"] && names["decide"] && names["git.sync"] && names["guardrail.measure"]
	})
	byID := map[string]*tracepb.Span{}
	for _, s := range got {
		byID[string(s.SpanId)] = s
	}
	advanced := false
	for _, s := range got {
		if s.Name == "decide" && attr(s, "plan") == "shop" && attr(s, "action.kind") == "Advance" {
			advanced = true
			// decide is inside its plan's step, inside a safety cycle.
			step := byID[string(s.ParentSpanId)]
			if step == nil || step.Name != "step" || byID[string(step.ParentSpanId)] == nil || byID[string(step.ParentSpanId)].Name != "safety.cycle" {
				t.Errorf("a decide span's parents are not step and safety.cycle")
			}
		}
		if s.Name == "guardrail.measure" && attr(s, "guardrail") != "errors" {
			t.Errorf("a measurement span of guardrail %q", attr(s, "guardrail"))
		}
	}
	if !advanced {
		t.Error("no decide span of an Advance of shop")
	}
	// The logs carry trace ids.
	log, err := os.ReadFile(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "trace_id=") {
		t.Errorf("no trace_id in the daemon's log")
	}
	// The monitor draws the recent cycles from the daemon's ring.
	out, err := exec.Command(hal9(t), "monitor", "--daemon", d.url, "--dashboard", "traces", "--once").CombinedOutput()
	if err != nil {
		t.Fatalf("monitor --dashboard traces: %v\n%s", err, out)
	}
	for _, want := range []string{"safety.cycle", "step", "decide"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("monitor --dashboard traces shows no %s:\n%s", want, out)
		}
	}
}
