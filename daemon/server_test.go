package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/store"
)

// serve serves h with NewServer on 127.0.0.1, as the daemon does, and
// returns its address.
func serve(t *testing.T, h http.Handler, o ServerOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, o)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// trickle sends head on a new connection, then one byte every `every`,
// until the server closes the connection or within gives out. It returns
// how long the server kept the connection after head, and what it
// answered.
func trickle(t *testing.T, addr, head string, every, within time.Duration) (time.Duration, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	answer := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		answer <- string(b)
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	giveUp := time.After(within)
	sent := 0
	for {
		select {
		case a := <-answer:
			t.Logf("closed after %s and %d trickled bytes", time.Since(start).Round(time.Millisecond), sent)
			return time.Since(start), a
		case <-tick.C:
			// A write may fail once the server has closed: the read
			// above then reports it.
			if _, err := conn.Write([]byte{'x'}); err == nil {
				sent++
			}
		case <-giveUp:
			t.Fatalf("the server still held the connection after %s and %d trickled bytes", within, sent)
		}
	}
}

// TestTrickle checks, against the daemon's server on 127.0.0.1, that a
// client sending its headers or its body a byte at a time is cut off
// within ReadHeaderTimeout or ReadTimeout, on every kind of endpoint: the
// ones that run long (and move their connection's deadlines out once the
// body is in), the quick ones, and one that does not read the body.
func TestTrickle(t *testing.T) {
	r := newRig(t)
	if err := r.d.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
	opts := ServerOptions{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 5 * time.Second}
	addr := serve(t, r.d.Handler(HTTPOptions{WebhookSecret: []byte("s3cret"), APIToken: "t0ken", Branch: "main"}), opts)
	// A byte every 500ms keeps each read short: only a bound on the
	// whole request ends it. 1000 bytes would take over 8 minutes.
	const every = 500 * time.Millisecond
	body := func(method, path string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: hal9-migrate\r\nAuthorization: Bearer t0ken\r\n" +
			"X-GitHub-Event: push\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
	}
	for _, c := range []struct {
		name, head string
		within     time.Duration
		answer     string
	}{
		{"verify, a long endpoint", body("POST", "/api/v1/migrations/base/verify"), opts.ReadTimeout, "408 Request Timeout"},
		{"checkpoint, a long endpoint", body("POST", "/api/v1/migrations/base/checkpoints"), opts.ReadTimeout, "408 Request Timeout"},
		{"the webhook", body("POST", "/webhook"), opts.ReadTimeout, "400 Bad Request"},
		{"a read that ignores the body", body("GET", "/api/v1/migrations"), opts.ReadTimeout, "200 OK"},
		{"headers", "GET /healthz HTTP/1.1\r\nHost: hal9-migrate\r\nX-Slow: ", opts.ReadHeaderTimeout, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			took, answer := trickle(t, addr, c.head, every, c.within+5*time.Second)
			if took > c.within+time.Second {
				t.Errorf("the connection was held %s, over the timeout of %s", took, c.within)
			}
			if !strings.Contains(answer, c.answer) {
				t.Errorf("answer %q, want %q", answer, c.answer)
			}
		})
	}
}

// TestServerBounds checks the defaults NewServer applies, and that headers
// and bodies over their bounds are refused.
func TestServerBounds(t *testing.T) {
	srv := NewServer(http.NotFoundHandler(), ServerOptions{ReadTimeout: time.Minute})
	def := DefaultServerOptions()
	if srv.ReadTimeout != time.Minute || srv.ReadHeaderTimeout != def.ReadHeaderTimeout || srv.WriteTimeout != def.WriteTimeout ||
		srv.IdleTimeout != def.IdleTimeout || srv.MaxHeaderBytes != def.MaxHeaderBytes {
		t.Errorf("server %+v", srv)
	}
	for _, d := range []time.Duration{def.ReadHeaderTimeout, def.ReadTimeout, def.WriteTimeout, def.IdleTimeout} {
		if d <= 0 {
			t.Errorf("a default timeout is %s", d)
		}
	}

	r := newRig(t)
	if err := r.d.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r.d.Handler(HTTPOptions{APIToken: "t0ken"}), ServerOptions{})
	url := "http://" + addr
	if code, _ := get(t, url+"/healthz", "X-Big", strings.Repeat("x", 100<<10)); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB of headers: %d", code)
	}
	big := `{"name": "` + strings.Repeat("x", 100<<10) + `"}`
	for _, path := range []string{"/api/v1/migrations/base/checkpoints", "/api/v1/migrations/base/verify"} {
		code, body := doBody(t, http.MethodPost, url+path, big, "Authorization", "Bearer t0ken")
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "over 64 KiB") {
			t.Errorf("%s with 100 KiB: %d %s", path, code, body)
		}
	}
}

// slowJob adds to the rig's plan a check whose job runs 90s on the rig's
// clock, and syncs it.
func slowJob(t *testing.T, r *rig) {
	t.Helper()
	r.person(t, "a slow check", func(s string) string {
		return strings.Replace(s, "verify:\n", "verify:\n    slow: {run: {image: \"migrator:1\", env: {FAKE_JOB_DURATION: 90s}}}\n", 1)
	})
	if err := r.d.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestLongRequest checks that verify, which waits for its jobs, outlives
// the server's ReadTimeout and WriteTimeout, and ends at its own deadline.
func TestLongRequest(t *testing.T) {
	r := newRig(t)
	slowJob(t, r)
	tight := ServerOptions{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	url := "http://" + serve(t, r.d.Handler(HTTPOptions{APIToken: "t0ken"}), tight)

	// The job ends 90s later on the rig's clock, which moves after 1.5s
	// of real time: far past the server's timeouts.
	go func() {
		time.Sleep(1500 * time.Millisecond)
		r.clock.Step(2 * time.Minute)
	}()
	start := time.Now()
	code, body := doBody(t, http.MethodPost, url+"/api/v1/migrations/base/verify", `{"tests": ["slow"]}`, "Authorization", "Bearer t0ken")
	if code != http.StatusOK || !strings.Contains(body, `"passed": true`) || time.Since(start) < 1500*time.Millisecond {
		t.Errorf("verify of a job that outlasts the server's timeouts: %d after %s: %s", code, time.Since(start), body)
	}
	// A quick request on the same server is bound by its timeouts as
	// usual, and answers.
	if code, _ := get(t, url+"/api/v1/migrations"); code != http.StatusOK {
		t.Errorf("migrations: %d", code)
	}

	// At the verify deadline, the job is reported as not finished.
	url = "http://" + serve(t, r.d.Handler(HTTPOptions{APIToken: "t0ken", Deadlines: Deadlines{Verify: 500 * time.Millisecond}}), tight)
	start = time.Now()
	code, body = doBody(t, http.MethodPost, url+"/api/v1/migrations/base/verify", `{"tests": ["slow"]}`, "Authorization", "Bearer t0ken")
	if code != http.StatusOK || !strings.Contains(body, `"passed": false`) || !strings.Contains(body, "context deadline exceeded") || time.Since(start) > 3*time.Second {
		t.Errorf("verify past its deadline: %d after %s: %s", code, time.Since(start), body)
	}
}

// blockingStore is a store whose reads wait until their context ends.
type blockingStore struct{ store.Store }

func (blockingStore) Load(ctx context.Context, _ string) (store.Record, error) {
	<-ctx.Done()
	return store.Record{}, ctx.Err()
}

func (blockingStore) History(ctx context.Context, _ string, _ int) ([]store.Event, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestReadDeadline checks that the reads end at their deadline when the
// store does not answer.
func TestReadDeadline(t *testing.T) {
	r := newRig(t)
	if err := r.d.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.d.Store = blockingStore{r.store}
	url := "http://" + serve(t, r.d.Handler(HTTPOptions{Deadlines: Deadlines{Read: 200 * time.Millisecond}}), ServerOptions{})
	for _, c := range []struct {
		path string
		code int
	}{
		{"/api/v1/migrations", http.StatusInternalServerError},
		{"/api/v1/migrations/base", http.StatusInternalServerError},
		{"/api/v1/migrations/base/checkpoints", http.StatusInternalServerError},
		{"/", http.StatusInternalServerError},
		{"/readyz", http.StatusServiceUnavailable},
	} {
		start := time.Now()
		code, body := get(t, url+c.path)
		if code != c.code || !strings.Contains(body, "deadline exceeded") || time.Since(start) > 2*time.Second {
			t.Errorf("%s with a store that does not answer: %d after %s: %s", c.path, code, time.Since(start), body)
		}
	}
}

// TestPrecheckToken checks that running a pre-check needs the token and
// that its last result is served without one, at a bounded rate.
func TestPrecheckToken(t *testing.T) {
	r := newRig(t)
	if err := r.d.Step(t.Context()); err != nil {
		t.Fatal(err)
	}
	url := "http://" + serve(t, r.d.Handler(HTTPOptions{APIToken: "t0ken", LastPrecheckEvery: time.Second, LastPrecheckBurst: 2}), ServerOptions{})
	observes := func() int {
		n := 0
		for _, c := range r.fake.Driver("base").Calls() {
			if c.Op == fake.OpObserve {
				n++
			}
		}
		return n
	}

	if code, body := get(t, url+"/api/v1/precheck/last"); code != http.StatusNotFound || !strings.Contains(body, "needs the API token") {
		t.Errorf("last pre-check before any: %d %s", code, body)
	}
	before := observes()
	for _, auth := range []string{"", "Bearer wrong", "t0ken"} {
		if code, body := get(t, url+"/api/v1/precheck?deep=true", "Authorization", auth); code != http.StatusUnauthorized {
			t.Errorf("pre-check with Authorization %q: %d %s", auth, code, body)
		}
	}
	if n := observes(); n != before {
		t.Errorf("pre-checks without the token observed the workloads %d times", n-before)
	}

	code, body := get(t, url+"/api/v1/precheck?components=git,workloads", "Authorization", "Bearer t0ken")
	var run PrecheckResult
	if err := json.Unmarshal([]byte(body), &run); code != http.StatusOK || err != nil || !run.OK || !run.At.Equal(t0) ||
		strings.Join(run.Components, ",") != "git,workloads" || len(run.Checks) == 0 {
		t.Fatalf("pre-check with the token: %d %v %s", code, err, body)
	}
	if observes() == before {
		t.Error("the pre-check did not observe the workloads")
	}

	// The last result, to anyone: a burst of 2 (the 404 above took one),
	// then one a second.
	var last PrecheckResult
	code, body = get(t, url+"/api/v1/precheck/last")
	if err := json.Unmarshal([]byte(body), &last); code != http.StatusOK || err != nil || !last.At.Equal(run.At) || len(last.Checks) != len(run.Checks) {
		t.Errorf("last pre-check: %d %v %s", code, err, body)
	}
	resp, err := http.Get(url + "/api/v1/precheck/last")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("over the rate: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	if code, _ := get(t, url+"/api/v1/precheck/last", "Authorization", "Bearer t0ken"); code != http.StatusOK {
		t.Errorf("last pre-check with the token, over the rate: %d", code)
	}
	r.clock.Step(time.Second)
	if code, _ := get(t, url+"/api/v1/precheck/last"); code != http.StatusOK {
		t.Errorf("last pre-check a second later: %d", code)
	}

	// A daemon without a token runs no pre-check.
	url = "http://" + serve(t, r.d.Handler(HTTPOptions{}), ServerOptions{})
	if code, body := get(t, url+"/api/v1/precheck", "Authorization", "Bearer "); code != http.StatusForbidden || !strings.Contains(body, "none configured") {
		t.Errorf("pre-check on a daemon without a token: %d %s", code, body)
	}
}

func TestBucket(t *testing.T) {
	b := newBucket(time.Second, 2)
	now := t0
	for i, want := range []time.Duration{0, 0, time.Second} {
		if got := b.take(now); got != want {
			t.Errorf("take %d: %s, want %s", i, got, want)
		}
	}
	now = now.Add(400 * time.Millisecond)
	if got := b.take(now); got != 600*time.Millisecond {
		t.Errorf("0.4 s later: %s", got)
	}
	now = now.Add(600 * time.Millisecond)
	if got := b.take(now); got != 0 {
		t.Errorf("1 s later: %s", got)
	}
	now = now.Add(time.Hour)
	if b.take(now) != 0 || b.take(now) != 0 || b.take(now) == 0 {
		t.Error("an hour later the bucket holds more than its burst")
	}
}
