package guardrails

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/hal9ai/hal9-migrate/plan"
)

// PrometheusConfig is how the daemon reaches Prometheus, as its config file
// gives it. Secrets are named by file, read when a request is made (so a
// rotated token is picked up), and never logged or put in errors.
type PrometheusConfig struct {
	// URL is the server's base URL: http://prometheus:9090, or a path
	// prefix such as https://example.com/prometheus.
	URL string `json:"url" yaml:"url"`
	// BearerTokenFile holds a token sent as "Authorization: Bearer".
	BearerTokenFile string `json:"bearerTokenFile,omitempty" yaml:"bearerTokenFile,omitempty"`
	// BasicAuth sends a user name and the password read from a file. At
	// most one of BearerTokenFile and BasicAuth is set.
	BasicAuth *BasicAuth `json:"basicAuth,omitempty" yaml:"basicAuth,omitempty"`
	// TLS configures https:// URLs.
	TLS TLSConfig `json:"tls,omitzero" yaml:"tls,omitempty"`
	// Timeout bounds one query; 0 means 10s.
	Timeout plan.Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
}

// BasicAuth is a user name and a password file.
type BasicAuth struct {
	Username     string `json:"username" yaml:"username"`
	PasswordFile string `json:"passwordFile" yaml:"passwordFile"`
}

// TLSConfig names the files of a TLS connection. With none set the system's
// roots verify the server.
type TLSConfig struct {
	// CAFile holds the PEM certificates that verify the server instead of
	// the system's roots.
	CAFile string `json:"caFile,omitempty" yaml:"caFile,omitempty"`
	// CertFile and KeyFile are a client certificate and its key, in PEM.
	CertFile string `json:"certFile,omitempty" yaml:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty" yaml:"keyFile,omitempty"`
	// ServerName overrides the name the server's certificate must carry.
	ServerName string `json:"serverName,omitempty" yaml:"serverName,omitempty"`
	// InsecureSkipVerify accepts any server certificate. For tests only.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty" yaml:"insecureSkipVerify,omitempty"`
}

// KindPrometheus is the kind of a source that is a PromQL query: a plan's
// prometheus block, a *plan.Prometheus.
const KindPrometheus = "prometheus"

var prometheusKind = register(Kind{
	Name:         KindPrometheus,
	Noun:         "a Prometheus query",
	Plural:       "prometheus queries",
	Unconfigured: "the daemon's configuration names no Prometheus",
})

// DefaultQueryTimeout bounds a query when the config sets no timeout.
const DefaultQueryTimeout = 10 * time.Second

// Prometheus runs PromQL through the Prometheus HTTP API. It is safe for
// concurrent use. Create one with NewPrometheus.
type Prometheus struct {
	api     promv1.API
	url     string
	timeout time.Duration
}

var (
	_ Provider     = (*Prometheus)(nil)
	_ RangeQuerier = (*Prometheus)(nil)
	_ Pinger       = (*Prometheus)(nil)
	_ Sampler      = (*Prometheus)(nil)
)

// NewPrometheus checks cfg and returns a client for it. It reads the secret
// and certificate files once, so that a wrong path fails here rather than at
// the first evaluation.
func NewPrometheus(cfg PrometheusConfig) (*Prometheus, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q: want an http:// or https:// URL", cfg.URL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("prometheus url %s: put credentials in basicAuth or bearerTokenFile, not in the URL", u.Redacted())
	}
	if cfg.BearerTokenFile != "" && cfg.BasicAuth != nil {
		return nil, errors.New("prometheus: set bearerTokenFile or basicAuth, not both")
	}
	tlsConfig, err := cfg.TLS.load()
	if err != nil {
		return nil, fmt.Errorf("prometheus tls: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	var rt http.RoundTripper = transport
	switch {
	case cfg.BearerTokenFile != "":
		if _, err := readSecret(cfg.BearerTokenFile); err != nil {
			return nil, fmt.Errorf("prometheus bearerTokenFile: %w", err)
		}
		rt = &authTransport{next: rt, header: func() (string, error) {
			tok, err := readSecret(cfg.BearerTokenFile)
			return "Bearer " + tok, err
		}}
	case cfg.BasicAuth != nil:
		b := *cfg.BasicAuth
		if b.Username == "" || b.PasswordFile == "" {
			return nil, errors.New("prometheus basicAuth: want username and passwordFile")
		}
		if _, err := readSecret(b.PasswordFile); err != nil {
			return nil, fmt.Errorf("prometheus basicAuth passwordFile: %w", err)
		}
		rt = &authTransport{next: rt, header: func() (string, error) {
			pw, err := readSecret(b.PasswordFile)
			if err != nil {
				return "", err
			}
			r := http.Request{Header: http.Header{}}
			r.SetBasicAuth(b.Username, pw)
			return r.Header.Get("Authorization"), nil
		}}
	}
	client, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus url %s: %w", u.Redacted(), err)
	}
	timeout := cfg.Timeout.Std()
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	return &Prometheus{api: promv1.NewAPI(client), url: u.Redacted(), timeout: timeout}, nil
}

// URL returns the server's address, as configured.
func (p *Prometheus) URL() string { return p.url }

func (t TLSConfig) load() (*tls.Config, error) {
	c := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("certFile and keyFile go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// The error of LoadX509KeyPair names no key material.
			return nil, fmt.Errorf("client certificate %s: %w", t.CertFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// readSecret reads a secret file, trimmed of surrounding white space. Its
// errors name the file, never the content.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// authTransport sets the Authorization header of every request.
type authTransport struct {
	next   http.RoundTripper
	header func() (string, error)
}

func (t *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h, err := t.header()
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("read the credentials: %w", err)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", h)
	return t.next.RoundTrip(r)
}

// Measure runs the source's query at the time.
func (p *Prometheus) Measure(ctx context.Context, src Source, at time.Time) Measurement {
	q, err := promQuery(src)
	if err != nil {
		return Measurement{Err: err}
	}
	v, err := p.Query(ctx, q, at)
	return Measurement{Value: v, Err: err}
}

// Range runs the source's query over a range of time (see QueryRange).
func (p *Prometheus) Range(ctx context.Context, src Source, start, end time.Time, step time.Duration) ([]Series, error) {
	q, err := promQuery(src)
	if err != nil {
		return nil, err
	}
	return p.QueryRange(ctx, q, start, end, step)
}

// Samples runs the source's query over [from, to] every step and returns
// every value of every series it returned: the samples a statistical test
// judges, one per evaluation and instance.
func (p *Prometheus) Samples(ctx context.Context, src Source, from, to time.Time, step time.Duration) ([]float64, error) {
	series, err := p.Range(ctx, src, from, to, step)
	if err != nil {
		return nil, err
	}
	return pointValues(series), nil
}

// pointValues flattens series into their values, NaN dropped: at most
// maxSamples of them, every k-th when there are more, so that every series
// and every stretch of the window keeps its share.
func pointValues(series []Series) []float64 {
	var out []float64
	for _, s := range series {
		for _, pt := range s.Points {
			if !math.IsNaN(pt.Value) {
				out = append(out, pt.Value)
			}
		}
	}
	return thin(out)
}

// Ping runs a query that always has a value, to see that the server answers.
func (p *Prometheus) Ping(ctx context.Context) error {
	if _, err := p.Query(ctx, "vector(1)", time.Now()); err != nil {
		return fmt.Errorf("prometheus at %s: %w", p.url, err)
	}
	return nil
}

// promQuery returns the query of a source of the prometheus kind.
func promQuery(src Source) (string, error) {
	q, ok := src.Block.(*plan.Prometheus)
	if src.Kind != prometheusKind.Name || !ok || q == nil {
		return "", fmt.Errorf("a source of kind %q is not a prometheus query", src.Kind)
	}
	return src.fill(q.Query), nil
}

// Query evaluates query at the time and returns its one value. An empty
// result and NaN are ErrNoData; more than one series is ErrSeries, naming how
// many: a guardrail must say which series its bound applies to.
func (p *Prometheus) Query(ctx context.Context, query string, at time.Time) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, query, at, promv1.WithTimeout(p.timeout))
	if err != nil {
		return 0, p.wrap(err)
	}
	return single(v)
}

// wrap names the server in a query error; a v1.Error reads "bad_data:
// parse error ...", a transport error names the URL already.
func (p *Prometheus) wrap(err error) error {
	var apiErr *promv1.Error
	if errors.As(err, &apiErr) {
		return fmt.Errorf("prometheus %s: %w", p.url, err)
	}
	return fmt.Errorf("prometheus: %w", err)
}

// single reads the one value of an instant query's result.
func single(v model.Value) (float64, error) {
	switch v := v.(type) {
	case *model.Scalar:
		if v == nil {
			return 0, ErrNoData
		}
		return value(v.Value)
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, fmt.Errorf("the query returned no series: %w", ErrNoData)
		case 1:
			if v[0] == nil {
				return 0, ErrNoData
			}
			if v[0].Histogram != nil {
				return 0, errors.New("the query returned a native histogram, not a number (wrap it in histogram_quantile or histogram_count)")
			}
			return value(v[0].Value)
		}
		labels := make([]string, 0, len(v))
		for _, s := range v {
			if s != nil {
				labels = append(labels, s.Metric.String())
			}
		}
		return 0, seriesError(labels)
	case model.Matrix:
		return 0, errors.New("the query returned a range vector, want one number (drop the [range] or wrap it in a function such as rate)")
	case *model.String:
		return 0, errors.New("the query returned a string, want a number")
	}
	return 0, fmt.Errorf("the query returned an unexpected %T", v)
}

func value(v model.SampleValue) (float64, error) {
	if f := float64(v); !math.IsNaN(f) {
		return f, nil
	}
	return 0, fmt.Errorf("the query returned NaN: %w", ErrNoData)
}

// seriesError says how many series came back and which, a few of them.
func seriesError(labels []string) error {
	slices.Sort(labels)
	const shown = 3
	list := strings.Join(labels[:min(len(labels), shown)], ", ")
	if len(labels) > shown {
		list += fmt.Sprintf(" and %d more", len(labels)-shown)
	}
	return fmt.Errorf("the query returned %d series (%s), want one: aggregate them, with sum or max, or select one: %w", len(labels), list, ErrSeries)
}

// Series is one labelled series of a range query's result.
type Series struct {
	Labels string
	Points []Point
}

// Point is one value of a series at a time. NaN means no data.
type Point struct {
	At    time.Time
	Value float64
}

// maxPoints is how many points per series one range query asks for:
// Prometheus refuses more than 11,000.
const maxPoints = 10_000

// QueryRange evaluates query at every step from start to end, in as many
// requests as Prometheus's limit of points per series needs, and returns
// every series it returned, points in time order.
func (p *Prometheus) QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]Series, error) {
	if step <= 0 {
		return nil, errors.New("query range: step must be positive")
	}
	if end.Before(start) {
		return nil, errors.New("query range: end is before start")
	}
	bySeries := map[string]*Series{}
	var order []string
	for from := start; !from.After(end); from = from.Add(maxPoints * step) {
		to := from.Add((maxPoints - 1) * step)
		if to.After(end) {
			to = end
		}
		qctx, cancel := context.WithTimeout(ctx, p.timeout)
		v, _, _, err := p.api.QueryRange(qctx, query, promv1.Range{Start: from, End: to, Step: step}, promv1.WithTimeout(p.timeout))
		cancel()
		if err != nil {
			return nil, p.wrap(err)
		}
		m, ok := v.(model.Matrix)
		if !ok {
			return nil, fmt.Errorf("the range query returned a %s, want a matrix", v.Type())
		}
		for _, ss := range m {
			if ss == nil {
				continue
			}
			key := ss.Metric.String()
			s, ok := bySeries[key]
			if !ok {
				s = &Series{Labels: key}
				bySeries[key] = s
				order = append(order, key)
			}
			for _, sp := range ss.Values {
				s.Points = append(s.Points, Point{At: sp.Timestamp.Time(), Value: float64(sp.Value)})
			}
		}
	}
	out := make([]Series, len(order))
	for i, k := range order {
		out[i] = *bySeries[k]
		slices.SortFunc(out[i].Points, func(a, b Point) int { return a.At.Compare(b.At) })
	}
	return out, nil
}
