package daemon

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/shorthash"
)

// HTTPOptions configures the daemon's HTTP side.
type HTTPOptions struct {
	// Metrics serves /metrics; nil: not served.
	Metrics http.Handler
	// WebhookSecret verifies push webhooks on /webhook; empty: the endpoint
	// answers 404, and only polling notices pushes.
	WebhookSecret []byte
	// Branch is the tracked branch: pushes to other branches are ignored.
	Branch string
	// APIToken guards the endpoints that act (POST /api/v1/sync, taking a
	// checkpoint, verify) and those that reach out with the daemon's
	// credentials (running a pre-check), sent as "Authorization: Bearer
	// TOKEN"; empty: they answer 403.
	APIToken string
	// Deadlines bound each kind of request (zero fields: DefaultDeadlines).
	Deadlines Deadlines
	// LastPrecheckEvery and LastPrecheckBurst bound how often the last
	// pre-check's result is served without the token: a burst of
	// LastPrecheckBurst answers, then one every LastPrecheckEvery
	// (default 5, then one a second). Requests with the token are not
	// counted.
	LastPrecheckEvery time.Duration
	LastPrecheckBurst int
}

// Handler serves the daemon's HTTP endpoints:
//
//	GET  /healthz                      the safety loop has finished a cycle lately
//	GET  /readyz                       the plans are known and the store answers; how stale Git is
//	GET  /metrics                      Prometheus metrics
//	POST /webhook                      a push webhook (HMAC-verified) triggers a sync
//	GET  /api/v1/migrations            every migration, as JSON (?history=N events each)
//	GET  /api/v1/migrations/{name}     one migration
//	GET  /api/v1/migrations/{name}/checkpoints[/{checkpoint}]   its checkpoints
//	POST /api/v1/migrations/{name}/checkpoints                  take one (needs the API token)
//	POST /api/v1/migrations/{name}/verify                       run checks (needs the API token)
//	GET  /api/v1/precheck              run a pre-check (needs the API token)
//	GET  /api/v1/precheck/last         the last pre-check's result, rate-limited
//	POST /api/v1/sync                  sync and reconcile now (needs the API token)
//	GET  /api/v1/traces                the recent cycles' traces, newest first (?limit=N, ?plan=NAME)
//	GET  /                             the status page
//
// Reads are answered from the store and the latest decisions. What acts
// on the workloads (a checkpoint, a verify job) or reaches out with the
// daemon's credentials (a pre-check lists the remote's refs, observes
// every workload and queries Prometheus) needs the token. Every request
// works under a deadline (HTTPOptions.Deadlines) and a bounded body; serve
// the handler with NewServer, which bounds the connections.
func (d *Daemon) Handler(o HTTPOptions) http.Handler {
	d.init()
	dl := o.Deadlines.withDefaults()
	read := func(h http.HandlerFunc) http.Handler { return quick(dl.Read, maxAPIBody, h) }
	token := func(h http.Handler) http.Handler { return withToken(o.APIToken, h) }
	pc := newPrechecks(o.LastPrecheckEvery, o.LastPrecheckBurst)

	mux := http.NewServeMux()
	mux.Handle("GET /healthz", read(d.healthz))
	mux.Handle("GET /readyz", read(d.ready))
	if o.Metrics != nil {
		mux.Handle("GET /metrics", quick(dl.Read, maxAPIBody, o.Metrics))
	}
	if len(o.WebhookSecret) > 0 {
		// The branch may be given as a full ref name, as gitops.Open
		// takes it; a push names the short one.
		branch := strings.TrimPrefix(o.Branch, "refs/heads/")
		mux.Handle("/webhook", quick(dl.Webhook, maxWebhookBody, gitops.WebhookHandler(o.WebhookSecret, func(p gitops.Push) {
			if branch == "" || p.Branch() == branch {
				d.log().Info("push webhook", "source", p.Source, "ref", p.Ref, "after", p.After)
				d.Wake()
			}
		})))
	}
	mux.Handle("GET /api/v1/migrations", read(func(w http.ResponseWriter, r *http.Request) {
		n, ok := historyParam(w, r)
		if !ok {
			return
		}
		ms, err := d.Migrations(r.Context(), n)
		if err != nil {
			apiError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"migrations": ms})
	}))
	mux.Handle("GET /api/v1/migrations/{name}", read(func(w http.ResponseWriter, r *http.Request) {
		n, ok := historyParam(w, r)
		if !ok {
			return
		}
		m, found, err := d.Migration(r.Context(), r.PathValue("name"), n)
		if answered(w, r, found, err) {
			writeJSON(w, http.StatusOK, m)
		}
	}))
	mux.Handle("GET /api/v1/migrations/{name}/checkpoints", read(func(w http.ResponseWriter, r *http.Request) {
		cps, found, err := d.Checkpoints(r.Context(), r.PathValue("name"))
		if !answered(w, r, found, err) {
			return
		}
		for i := range cps {
			cps[i].Data = nil
		}
		writeJSON(w, http.StatusOK, map[string]any{"checkpoints": cps})
	}))
	mux.Handle("GET /api/v1/migrations/{name}/checkpoints/{checkpoint}", read(func(w http.ResponseWriter, r *http.Request) {
		cps, found, err := d.Checkpoints(r.Context(), r.PathValue("name"))
		if !answered(w, r, found, err) {
			return
		}
		for _, cp := range cps {
			if cp.Name == r.PathValue("checkpoint") {
				writeJSON(w, http.StatusOK, cp)
				return
			}
		}
		apiError(w, http.StatusNotFound, "no checkpoint named "+strconv.Quote(r.PathValue("checkpoint")))
	}))
	mux.Handle("POST /api/v1/migrations/{name}/checkpoints", token(lengthy(dl.Checkpoint, maxAPIBody, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			apiError(w, http.StatusBadRequest, "want a JSON object with name and description: "+err.Error())
			return
		}
		if !checkpointName.MatchString(req.Name) {
			apiError(w, http.StatusBadRequest, "name: want 1 to 63 lowercase letters, digits and dashes, starting with a letter")
			return
		}
		cp, found, err := d.Checkpoint(r.Context(), r.PathValue("name"), req.Name, req.Description)
		if !answered(w, r, found, err) {
			return
		}
		cp.Data = nil
		writeJSON(w, http.StatusCreated, cp)
	})))
	mux.Handle("GET /api/v1/precheck", token(lengthy(dl.Precheck, maxAPIBody, func(w http.ResponseWriter, r *http.Request) {
		var components []string
		if c := r.URL.Query().Get("components"); c != "" {
			components = strings.Split(c, ",")
		}
		deep, _ := strconv.ParseBool(r.URL.Query().Get("deep"))
		res, err := pc.run(r.Context(), d, components, deep)
		switch {
		case errors.Is(err, errPrecheckBusy):
			apiError(w, http.StatusServiceUnavailable, err.Error())
		case err != nil:
			apiError(w, http.StatusBadRequest, err.Error())
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})))
	mux.Handle("GET /api/v1/precheck/last", read(func(w http.ResponseWriter, r *http.Request) {
		if !validToken(r, o.APIToken) {
			if wait := pc.limit.take(d.Clock.Now()); wait > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
				apiError(w, http.StatusTooManyRequests, "too many requests for the last pre-check: try again in "+wait.Round(time.Millisecond).String())
				return
			}
		}
		res, ok := pc.lastResult()
		if !ok {
			apiError(w, http.StatusNotFound, "no pre-check has run since the daemon started: running one needs the API token")
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
	mux.Handle("POST /api/v1/migrations/{name}/verify", token(lengthy(dl.Verify, maxAPIBody, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Tests []string `json:"tests"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			apiError(w, http.StatusBadRequest, "want a JSON object with tests: "+err.Error())
			return
		}
		vs, found, err := d.Verify(r.Context(), r.PathValue("name"), req.Tests)
		if err != nil && found {
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		if !answered(w, r, found, err) {
			return
		}
		passed := true
		for _, v := range vs {
			passed = passed && v.Passed
		}
		writeJSON(w, http.StatusOK, map[string]any{"passed": passed, "results": vs})
	})))
	mux.Handle("POST /api/v1/sync", token(quick(dl.Webhook, maxAPIBody, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.Wake()
		writeJSON(w, http.StatusAccepted, map[string]string{"result": "sync triggered"})
	}))))
	mux.Handle("GET /api/v1/traces", read(d.traces))
	mux.Handle("GET /{$}", read(d.page))
	return mux
}

// PrecheckResult is a pre-check's outcome: what it tried, with what, and
// when it started.
type PrecheckResult struct {
	// OK is false when any check failed; warnings do not count.
	OK     bool           `json:"ok"`
	Checks []PrecheckItem `json:"checks"`
	At     time.Time      `json:"at"`
	// Components are those checked; empty: all.
	Components []string `json:"components,omitempty"`
	Deep       bool     `json:"deep"`
}

// prechecks runs the pre-checks asked for over HTTP one at a time, and
// keeps the last result, which anyone may read at a bounded rate.
type prechecks struct {
	slot  chan struct{}
	limit *bucket

	mu   sync.Mutex
	last *PrecheckResult
}

var errPrecheckBusy = errors.New("another pre-check is running and did not end in time")

func newPrechecks(every time.Duration, burst int) *prechecks {
	if every <= 0 {
		every = time.Second
	}
	if burst <= 0 {
		burst = 5
	}
	return &prechecks{slot: make(chan struct{}, 1), limit: newBucket(every, burst)}
}

// run runs a pre-check once no other one runs, and keeps its result.
func (p *prechecks) run(ctx context.Context, d *Daemon, components []string, deep bool) (PrecheckResult, error) {
	select {
	case p.slot <- struct{}{}:
	case <-ctx.Done():
		return PrecheckResult{}, errPrecheckBusy
	}
	defer func() { <-p.slot }()
	res := PrecheckResult{At: d.Clock.Now(), Components: components, Deep: deep, OK: true}
	items, err := d.Precheck(ctx, components, deep)
	if err != nil {
		return PrecheckResult{}, err
	}
	res.Checks = items
	for _, it := range items {
		res.OK = res.OK && it.Result != "failed"
	}
	p.mu.Lock()
	p.last = &res
	p.mu.Unlock()
	return res, nil
}

func (p *prechecks) lastResult() (PrecheckResult, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		return PrecheckResult{}, false
	}
	return *p.last, true
}

// bucket is a token bucket: it holds up to burst tokens and gains one
// every per. Time is passed in, so that a test's clock drives it.
type bucket struct {
	per   time.Duration
	burst float64

	mu     sync.Mutex
	tokens float64
	at     time.Time
}

func newBucket(per time.Duration, burst int) *bucket {
	return &bucket{per: per, burst: float64(burst), tokens: float64(burst)}
}

// take takes a token at now and returns 0, or returns how long until one
// is there, taking none.
func (b *bucket) take(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.at.IsZero() && now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.at))/float64(b.per))
	}
	if now.After(b.at) {
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(b.per))
}

// checkpointName is what a checkpoint may be called: a DNS label, like the
// checkpoints a plan names.
var checkpointName = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// answered writes the error or the 404 of a request about one migration,
// and reports whether the caller should go on.
func answered(w http.ResponseWriter, r *http.Request, found bool, err error) bool {
	switch {
	case err != nil:
		apiError(w, http.StatusInternalServerError, err.Error())
	case !found:
		apiError(w, http.StatusNotFound, "no migration named "+strconv.Quote(r.PathValue("name")))
	default:
		return true
	}
	return false
}

// withToken lets through the requests that carry the API token. With no
// token configured, nothing passes: those endpoints are off.
func withToken(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case token == "":
			apiError(w, http.StatusForbidden, "this endpoint is off: it needs the API token, and the daemon has none configured")
		case !validToken(r, token):
			w.Header().Set("WWW-Authenticate", `Bearer realm="hal9-migrate"`)
			apiError(w, http.StatusUnauthorized, "a valid API token is needed (Authorization: Bearer TOKEN)")
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// validToken reports whether r carries the API token, which is not empty.
func validToken(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func historyParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("history")
	if v == "" {
		return 20, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000 {
		apiError(w, http.StatusBadRequest, "history: want a number of events in 0..1000")
		return 0, false
	}
	return n, true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

//go:embed page.html
var pageFS embed.FS

var pageTmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"pct": func(f float64) string { return strconv.Itoa(int(f*100+0.5)) + "%" },
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	},
	"short": shorthash.Of,
}).ParseFS(pageFS, "page.html"))

// page renders the status page: every migration's position, timeline,
// guardrails and recent history, refreshed by the browser every 10 s.
func (d *Daemon) page(w http.ResponseWriter, r *http.Request) {
	ms, err := d.Migrations(r.Context(), 15)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	d.mu.Lock()
	head := string(d.head)
	d.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, map[string]any{"Migrations": ms, "Now": d.Clock.Now(), "Head": head}); err != nil {
		d.log().Error("render the status page", "err", err)
	}
}
