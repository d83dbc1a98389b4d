package guardrails_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPrometheusQuery(t *testing.T) {
	srv := newFakeProm(t)
	p := srv.prometheus(t, guardrails.PrometheusConfig{})
	srv.set("one", vector("0.25"))
	srv.set("two", vector("1", "2"))
	srv.set("none", vector())
	if v, err := p.Query(context.Background(), "one", t0); err != nil || v != 0.25 {
		t.Fatalf("one: %g %v", v, err)
	}
	if _, err := p.Query(context.Background(), "two", t0); !errors.Is(err, guardrails.ErrSeries) || !strings.Contains(err.Error(), "2 series") {
		t.Fatalf("two: %v", err)
	}
	if _, err := p.Query(context.Background(), "none", t0); !errors.Is(err, guardrails.ErrNoData) {
		t.Fatalf("none: %v", err)
	}
	if p.URL() != srv.URL {
		t.Fatalf("URL %q", p.URL())
	}
}

func TestPrometheusAuth(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("up", vector("1"))

	token := writeFile(t, "token", "s3cr3t-token\n")
	p := srv.prometheus(t, guardrails.PrometheusConfig{BearerTokenFile: token})
	if _, err := p.Query(context.Background(), "up", t0); err != nil {
		t.Fatal(err)
	}
	// A rotated token is read at the next request.
	os.WriteFile(token, []byte("rotated"), 0o600)
	p.Query(context.Background(), "up", t0)

	pw := writeFile(t, "password", "pa55")
	p = srv.prometheus(t, guardrails.PrometheusConfig{BasicAuth: &guardrails.BasicAuth{Username: "hal9", PasswordFile: pw}})
	if _, err := p.Query(context.Background(), "up", t0); err != nil {
		t.Fatal(err)
	}
	want := []string{"Bearer s3cr3t-token", "Bearer rotated", "Basic " + base64.StdEncoding.EncodeToString([]byte("hal9:pa55"))}
	if strings.Join(srv.auth, "|") != strings.Join(want, "|") {
		t.Fatalf("authorization headers %q, want %q", srv.auth, want)
	}

	// A token file gone missing is an error naming the file, not the token.
	os.Remove(token)
	p2, _ := guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: srv.URL, BasicAuth: &guardrails.BasicAuth{Username: "hal9", PasswordFile: pw}})
	os.Remove(pw)
	_, err := p2.Query(context.Background(), "up", t0)
	if err == nil || !strings.Contains(err.Error(), "read the credentials") || strings.Contains(err.Error(), "pa55") {
		t.Fatalf("err = %v", err)
	}
}

func TestPrometheusConfigErrors(t *testing.T) {
	token := writeFile(t, "token", "secret-value")
	empty := writeFile(t, "empty", "\n")
	tests := []struct {
		cfg  guardrails.PrometheusConfig
		want string
	}{
		{guardrails.PrometheusConfig{}, `prometheus url "": want an http:// or https:// URL`},
		{guardrails.PrometheusConfig{URL: "localhost:9090"}, "want an http:// or https:// URL"},
		{guardrails.PrometheusConfig{URL: "http://u:secret-value@prom:9090"}, "prometheus url http://u:xxxxx@prom:9090: put credentials in basicAuth or bearerTokenFile"},
		{guardrails.PrometheusConfig{URL: "http://prom", BearerTokenFile: token, BasicAuth: &guardrails.BasicAuth{Username: "u", PasswordFile: token}}, "not both"},
		{guardrails.PrometheusConfig{URL: "http://prom", BearerTokenFile: "/nonexistent/token"}, "bearerTokenFile: open /nonexistent/token"},
		{guardrails.PrometheusConfig{URL: "http://prom", BearerTokenFile: empty}, "is empty"},
		{guardrails.PrometheusConfig{URL: "http://prom", BasicAuth: &guardrails.BasicAuth{Username: "u"}}, "want username and passwordFile"},
		{guardrails.PrometheusConfig{URL: "https://prom", TLS: guardrails.TLSConfig{CAFile: token}}, "no PEM certificate"},
		{guardrails.PrometheusConfig{URL: "https://prom", TLS: guardrails.TLSConfig{CertFile: token}}, "certFile and keyFile go together"},
		{guardrails.PrometheusConfig{URL: "https://prom", TLS: guardrails.TLSConfig{CertFile: token, KeyFile: token}}, "client certificate"},
	}
	for _, tc := range tests {
		_, err := guardrails.NewPrometheus(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-value") {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
}

func TestPrometheusTLS(t *testing.T) {
	answer := vector("1")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer.body)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake below
	srv.StartTLS()
	defer srv.Close()
	ca := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	cert, key := clientCert(t)

	// Without the CA the server's certificate is not trusted.
	p, err := guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Query(context.Background(), "up", t0); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: %v", err)
	}
	// With it but no client certificate the server refuses.
	p, _ = guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: srv.URL, TLS: guardrails.TLSConfig{CAFile: ca}})
	if _, err := p.Query(context.Background(), "up", t0); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("no client certificate: %v", err)
	}
	p, err = guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: srv.URL, TLS: guardrails.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key}})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.Query(context.Background(), "up", t0); err != nil || v != 1 {
		t.Fatalf("mutual TLS: %g %v", v, err)
	}
}

// clientCert writes the test server package's own certificate and key, as a
// client certificate.
func clientCert(t *testing.T) (cert, key string) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	c := srv.TLS.Certificates[0]
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return writeFile(t, "client.pem", string(certPEM)), writeFile(t, "client-key.pem", string(keyPEM))
}

func TestPrometheusQueryRange(t *testing.T) {
	// A server that answers range queries with one point per step of each
	// of the series named by the query ("1" or "2" series), and records
	// the ranges asked for.
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		start, _ := strconv.ParseFloat(r.Form.Get("start"), 64)
		end, _ := strconv.ParseFloat(r.Form.Get("end"), 64)
		step, _ := strconv.ParseFloat(r.Form.Get("step"), 64)
		ranges = append(ranges, r.Form.Get("start")+".."+r.Form.Get("end"))
		n, _ := strconv.Atoi(r.Form.Get("query"))
		var series []string
		for s := range n {
			var pts []string
			for ts := start; ts <= end; ts += step {
				v := strconv.Itoa(s)
				if int(ts)%7 == 0 {
					v = "NaN"
				}
				pts = append(pts, fmt.Sprintf("[%d,%q]", int64(ts), v))
			}
			series = append(series, fmt.Sprintf(`{"metric":{"s":"%d"},"values":[%s]}`, s, strings.Join(pts, ",")))
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[%s]}}`, strings.Join(series, ","))
	}))
	defer srv.Close()
	p, _ := guardrails.NewPrometheus(guardrails.PrometheusConfig{URL: srv.URL})

	start := time.Unix(1_700_000_000, 0)
	end := start.Add(25_000 * time.Second)
	got, err := p.QueryRange(context.Background(), "2", start, end, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 25,001 points a series take three requests of at most 10,000.
	if want := []string{"1700000000..1700009999", "1700010000..1700019999", "1700020000..1700025000"}; strings.Join(ranges, " ") != strings.Join(want, " ") {
		t.Fatalf("ranges %v, want %v", ranges, want)
	}
	if len(got) != 2 || got[0].Labels != `{s="0"}` || got[1].Labels != `{s="1"}` {
		t.Fatalf("series %+v", got)
	}
	for _, s := range got {
		if len(s.Points) != 25_001 || !s.Points[0].At.Equal(start) || !s.Points[25_000].At.Equal(end) {
			t.Fatalf("%s: %d points from %s to %s", s.Labels, len(s.Points), s.Points[0].At, s.Points[len(s.Points)-1].At)
		}
	}
	if _, err := p.QueryRange(context.Background(), "1", end, start, time.Second); err == nil {
		t.Fatal("end before start: no error")
	}
}

func TestChecker(t *testing.T) {
	srv := newFakeProm(t)
	srv.set("good", vector("0.001"))
	srv.set("bad", vector("0.5"))
	srv.set("empty", vector())
	srv.set("many", vector("1", "2"))
	h := newHealthServer(t)
	c := guardrails.NewChecker(guardrails.Providers{"prometheus": srv.prometheus(t, guardrails.PrometheusConfig{}), "http": guardrails.NewHTTP(nil)})
	p := planWith("shop")
	check := func(name string, chk plan.Check, passed bool, msg string, wantErr string) {
		t.Helper()
		res, err := c.Check(context.Background(), p, name, chk)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("%s: err = %v, want %q", name, err, wantErr)
			}
			return
		}
		if err != nil || res.Passed != passed || res.Message != msg || res.At.IsZero() {
			t.Fatalf("%s: %+v %v, want passed=%t %q", name, res, err, passed, msg)
		}
	}
	query := func(q string) *plan.Prometheus { return &plan.Prometheus{Query: q} }
	check("good", plan.Check{MetricSource: plan.MetricSource{Prometheus: query("good")}, Max: ptr(0.01)}, true, "check good: 0.001 (max 0.01)", "")
	check("bad", plan.Check{MetricSource: plan.MetricSource{Prometheus: query("bad")}, Max: ptr(0.01)}, false, "check bad: 0.5 over max 0.01 (max 0.01)", "")
	check("low", plan.Check{MetricSource: plan.MetricSource{Prometheus: query("bad")}, Min: ptr(1.0)}, false, "check low: 0.5 under min 1 (min 1)", "")
	check("empty", plan.Check{MetricSource: plan.MetricSource{Prometheus: query("empty")}, Max: ptr(0.01)}, false, "check empty has no data: the query returned no series: no data", "")
	check("many", plan.Check{MetricSource: plan.MetricSource{Prometheus: query("many")}, Max: ptr(0.01)}, false, "", "check many: the query returned 2 series")
	check("job", plan.Check{Run: &plan.Run{Image: "x"}}, false, "", "is a job")
	check("health", plan.Check{MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: h.URL}}}, true, "check health: 200 (expect 2xx)", "")
	h.code.Store(503)
	check("health", plan.Check{MetricSource: plan.MetricSource{HTTP: &plan.HTTPCheck{URL: h.URL}}}, false, "check health: GET "+h.URL+": status 503, want 2xx (expect 2xx)", "")
}
