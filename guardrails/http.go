package guardrails

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hal9ai/hal9-migrate/plan"
)

// KindHTTP is the kind of a source that is an HTTP health check: a plan's
// http block, a *plan.HTTPCheck.
const KindHTTP = "http"

var httpKind = register(Kind{Name: KindHTTP, Noun: "an HTTP check", Plural: "http checks"})

// DefaultHTTPTimeout bounds an HTTP check that sets no timeout.
const DefaultHTTPTimeout = 5 * time.Second

// HTTP calls health-check URLs. A check passes when the answer has the
// status it expects (any 2xx when it names none); no answer within its
// timeout, or another status, is a failed check. It is safe for concurrent
// use. Create one with NewHTTP.
type HTTP struct {
	client *http.Client
}

var _ Provider = (*HTTP)(nil)

// NewHTTP returns an HTTP provider sending its requests through client, or
// through a client of its own when client is nil. Redirects are followed as
// the client does; the status checked is the final one.
func NewHTTP(client *http.Client) *HTTP {
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &HTTP{client: client}
}

// Measure calls the source's URL once. The Measurement's value is the status
// code, 0 when no answer came.
func (h *HTTP) Measure(ctx context.Context, src Source, _ time.Time) Measurement {
	c, isCheck := src.Block.(*plan.HTTPCheck)
	if src.Kind != httpKind.Name || !isCheck || c == nil {
		return Measurement{Err: fmt.Errorf("a source of kind %q is not an http check", src.Kind)}
	}
	timeout := c.Timeout.Std()
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL, nil)
	if err != nil {
		// The schema admits only http(s) URLs and known methods: this is
		// a plan that skipped validation.
		return Measurement{Err: fmt.Errorf("http check: %w", err)}
	}
	req.Header.Set("User-Agent", "hal9-migrate")
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Measurement{Failed: true, Detail: fmt.Sprintf("%s %s: no answer within %s", method, c.URL, timeout)}
		}
		return Measurement{Failed: true, Detail: err.Error()}
	}
	// Read a little of the body so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	m := Measurement{Value: float64(resp.StatusCode)}
	want := "2xx"
	ok := resp.StatusCode/100 == 2
	if c.ExpectStatus != 0 {
		want = fmt.Sprint(c.ExpectStatus)
		ok = resp.StatusCode == c.ExpectStatus
	}
	if !ok {
		m.Failed = true
		m.Detail = fmt.Sprintf("%s %s: status %d, want %s", method, c.URL, resp.StatusCode, want)
	}
	return m
}
