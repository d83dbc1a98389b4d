package daemon

import (
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/reconcile"
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
	// APIToken guards the mutating endpoints (POST /api/v1/sync), sent as
	// "Authorization: Bearer TOKEN"; empty: they answer 403.
	APIToken string
}

// Handler serves the daemon's HTTP endpoints:
//
//	GET  /healthz                      the safety loop has finished a cycle lately
//	GET  /readyz                       the plans are known and the store answers; how stale Git is
//	GET  /metrics                      Prometheus metrics
//	POST /webhook                      a push webhook (HMAC-verified) triggers a sync
//	GET  /api/v1/migrations            every migration, as JSON (?history=N events each)
//	GET  /api/v1/migrations/{name}     one migration
//	POST /api/v1/sync                  sync and reconcile now (needs the API token)
//	GET  /                             the status page
//
// Every read is answered from the store and the latest decisions: nothing
// here acts on the workloads.
func (d *Daemon) Handler(o HTTPOptions) http.Handler {
	d.init()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.healthz)
	mux.HandleFunc("GET /readyz", d.ready)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	if len(o.WebhookSecret) > 0 {
		// The branch may be given as a full ref name, as gitops.Open
		// takes it; a push names the short one.
		branch := strings.TrimPrefix(o.Branch, "refs/heads/")
		mux.Handle("/webhook", gitops.WebhookHandler(o.WebhookSecret, func(p gitops.Push) {
			if branch == "" || p.Branch() == branch {
				d.log().Info("push webhook", "source", p.Source, "ref", p.Ref, "after", p.After)
				d.Wake()
			}
		}))
	}
	mux.HandleFunc("GET /api/v1/migrations", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("GET /api/v1/migrations/{name}", func(w http.ResponseWriter, r *http.Request) {
		n, ok := historyParam(w, r)
		if !ok {
			return
		}
		m, found, err := d.Migration(r.Context(), r.PathValue("name"), n)
		switch {
		case err != nil:
			apiError(w, http.StatusInternalServerError, err.Error())
		case !found:
			apiError(w, http.StatusNotFound, "no migration named "+strconv.Quote(r.PathValue("name")))
		default:
			writeJSON(w, http.StatusOK, m)
		}
	})
	mux.HandleFunc("GET /api/v1/migrations/{name}/checkpoints", func(w http.ResponseWriter, r *http.Request) {
		cps, found, err := d.Checkpoints(r.Context(), r.PathValue("name"))
		if !answered(w, r, found, err) {
			return
		}
		for i := range cps {
			cps[i].Data = nil
		}
		writeJSON(w, http.StatusOK, map[string]any{"checkpoints": cps})
	})
	mux.HandleFunc("GET /api/v1/migrations/{name}/checkpoints/{checkpoint}", func(w http.ResponseWriter, r *http.Request) {
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
	})
	mux.HandleFunc("POST /api/v1/migrations/{name}/checkpoints", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r, o.APIToken, w) {
			return
		}
		var req struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
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
	})
	mux.HandleFunc("GET /api/v1/precheck", func(w http.ResponseWriter, r *http.Request) {
		var components []string
		if c := r.URL.Query().Get("components"); c != "" {
			components = strings.Split(c, ",")
		}
		deep, _ := strconv.ParseBool(r.URL.Query().Get("deep"))
		items, err := d.Precheck(r.Context(), components, deep)
		if err != nil {
			apiError(w, http.StatusBadRequest, err.Error())
			return
		}
		ok := true
		for _, it := range items {
			ok = ok && it.Result != "failed"
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": ok, "checks": items})
	})
	mux.HandleFunc("POST /api/v1/migrations/{name}/verify", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r, o.APIToken, w) {
			return
		}
		var req struct {
			Tests []string `json:"tests"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
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
	})
	mux.HandleFunc("POST /api/v1/sync", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(r, o.APIToken, w) {
			return
		}
		d.Wake()
		writeJSON(w, http.StatusAccepted, map[string]string{"result": "sync triggered"})
	})
	mux.HandleFunc("GET /{$}", d.page)
	return mux
}

// checkpointName is what a checkpoint may be called: a DNS label, like the
// checkpoints a plan names.
var checkpointName = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

// answered writes the error or the 404 of a request about one migration,
// and reports whether the caller should go on.
func answered(w http.ResponseWriter, r *http.Request, found bool, err error) bool {
	switch {
	case errors.Is(err, reconcile.ErrCannotSnapshot):
		apiError(w, http.StatusConflict, err.Error())
	case err != nil:
		apiError(w, http.StatusInternalServerError, err.Error())
	case !found:
		apiError(w, http.StatusNotFound, "no migration named "+strconv.Quote(r.PathValue("name")))
	default:
		return true
	}
	return false
}

func authorized(r *http.Request, token string, w http.ResponseWriter) bool {
	if token == "" {
		apiError(w, http.StatusForbidden, "mutating endpoints are off: the daemon has no API token configured")
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hal9-migrate"`)
		apiError(w, http.StatusUnauthorized, "a valid API token is needed (Authorization: Bearer TOKEN)")
		return false
	}
	return true
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
	"short": short,
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
