// Package testapp is the small HTTP service the integration tests deploy as
// stable and candidate: it answers with its version, exposes Prometheus
// metrics of its own requests and process, and can be told at run time to
// fail a share of requests, to slow down, to report itself unhealthy, to
// burn CPU or to hold memory. Its command (cmd/testapp) also runs as a
// one-off job that exits with a given code.
//
// It is test equipment: nothing in the product imports it.
package testapp

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Behaviour is what the app does with the requests it serves.
type Behaviour struct {
	// ErrorRate is the share of requests, 0..1, answered with 500,
	// spread evenly over them.
	ErrorRate float64 `json:"errorRate"`
	// Latency is added to every request.
	Latency time.Duration `json:"latency"`
	// Unhealthy makes /health answer 503.
	Unhealthy bool `json:"unhealthy"`
	// CPUMillicores is the CPU time the app burns whether it serves
	// requests or not, in thousandths of a CPU, 0..MaxCPUMillicores.
	CPUMillicores int `json:"cpuMillicores"`
	// HoldBytes is the memory the app holds, written so that it is
	// resident, 0..MaxHoldBytes.
	HoldBytes int64 `json:"holdBytes"`
}

// App serves the test endpoints. Create one with New.
type App struct {
	version string
	reg     *prometheus.Registry

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	mu sync.Mutex
	b  Behaviour
	// burning says the burner runs; held is the memory held.
	burning bool
	held    []byte
	// owed is the failures the error rate has owed so far: each request
	// adds the rate and fails once a whole failure is owed. The failing
	// share is then exact over any run of requests (every other one at
	// 0.5), not a coin toss whose noise a test comparing two apps could
	// read as a difference.
	owed float64
}

// New returns an app reporting version, behaving as b.
func New(version string, b Behaviour) *App {
	a := &App{version: version, reg: prometheus.NewRegistry()}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "Requests served, by status code.",
		ConstLabels: prometheus.Labels{"version": version},
	}, []string{"code"})
	a.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds", Help: "Time to answer a request.",
		ConstLabels: prometheus.Labels{"version": version},
		Buckets:     []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"code"})
	// The process's CPU time and memory: what a reading of the
	// container's usage can be checked against.
	a.reg.MustRegister(a.requests, a.duration, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Zero series for the codes the tests query, so a rate over them is 0,
	// not "no data", before the first failure.
	for _, code := range []string{"200", "500"} {
		a.requests.WithLabelValues(code)
	}
	a.Set(b)
	return a
}

// Set changes the behaviour from now on. CPU and memory beyond their
// maximums are cut to them.
func (a *App) Set(b Behaviour) {
	b.CPUMillicores = min(max(b.CPUMillicores, 0), MaxCPUMillicores)
	b.HoldBytes = min(max(b.HoldBytes, 0), MaxHoldBytes)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.b = b
	a.useResources()
}

func (a *App) behaviour() Behaviour {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.b
}

// Handler serves:
//
//	/          the version, in the body and the X-Version header (counted)
//	/health    200, or 503 when unhealthy (not counted)
//	/metrics   Prometheus metrics: the requests', and the process's
//	           (process_cpu_seconds_total, process_resident_memory_bytes)
//	/control   GET shows the behaviour; POST sets it from the form fields
//	           errorRate, latency (a Go duration), unhealthy,
//	           cpuMillicores and holdBytes
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if a.behaviour().Unhealthy {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/control", a.control)
	mux.HandleFunc("/", a.serve)
	return mux
}

func (a *App) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	b := a.behaviour()
	if b.Latency > 0 {
		select {
		case <-time.After(b.Latency):
		case <-r.Context().Done():
		}
	}
	code := http.StatusOK
	if a.fails() {
		code = http.StatusInternalServerError
	}
	w.Header().Set("X-Version", a.version)
	w.WriteHeader(code)
	fmt.Fprintln(w, a.version)
	c := strconv.Itoa(code)
	a.requests.WithLabelValues(c).Inc()
	a.duration.WithLabelValues(c).Observe(time.Since(start).Seconds())
}

// fails says whether the request being served fails, by the error rate.
func (a *App) fails() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.b.ErrorRate <= 0 {
		a.owed = 0
		return false
	}
	a.owed += a.b.ErrorRate
	if a.owed < 1-1e-9 { // ten adds of 0.1 make 0.9999999999999999
		return false
	}
	a.owed--
	return true
}

func (a *App) control(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b := a.behaviour()
		if v := r.Form.Get("errorRate"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				http.Error(w, "errorRate: want a number in 0..1", http.StatusBadRequest)
				return
			}
			b.ErrorRate = f
		}
		if v := r.Form.Get("latency"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				http.Error(w, "latency: want a Go duration", http.StatusBadRequest)
				return
			}
			b.Latency = d
		}
		if v := r.Form.Get("unhealthy"); v != "" {
			u, err := strconv.ParseBool(v)
			if err != nil {
				http.Error(w, "unhealthy: want true or false", http.StatusBadRequest)
				return
			}
			b.Unhealthy = u
		}
		if v := r.Form.Get("cpuMillicores"); v != "" {
			m, err := strconv.Atoi(v)
			if err != nil || m < 0 || m > MaxCPUMillicores {
				http.Error(w, fmt.Sprintf("cpuMillicores: want an integer in 0..%d", MaxCPUMillicores), http.StatusBadRequest)
				return
			}
			b.CPUMillicores = m
		}
		if v := r.Form.Get("holdBytes"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > MaxHoldBytes {
				http.Error(w, fmt.Sprintf("holdBytes: want an integer in 0..%d", MaxHoldBytes), http.StatusBadRequest)
				return
			}
			b.HoldBytes = n
		}
		a.Set(b)
	}
	b := a.behaviour()
	fmt.Fprintf(w, "errorRate=%g latency=%s unhealthy=%t cpuMillicores=%d holdBytes=%d\n",
		b.ErrorRate, b.Latency, b.Unhealthy, b.CPUMillicores, b.HoldBytes)
}
