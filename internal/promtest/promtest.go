// Package promtest starts the real things the guardrail tests need: Debian's
// prometheus binary on 127.0.0.1, with a configuration of its own scraping
// given targets every few hundred milliseconds into temporary storage, and
// the test workload (internal/testapp) as a process whose error rate and
// latency a test switches at run time, with a bounded load generator.
//
// It is test equipment: nothing in the product imports it. It never touches
// a system Prometheus service or its configuration.
package promtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"

	"github.com/hal9ai/hal9-migrate/internal/testapp"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// BinaryEnv names a variable that points at the prometheus binary to run
// instead of the one on PATH.
const BinaryEnv = "HAL9_PROMETHEUS_BIN"

// Binary returns the path of the prometheus binary. Without one the test
// fails in CI (where .ci/run installs it) and is skipped elsewhere, loudly.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		return p
	}
	p, err := exec.LookPath("prometheus")
	if err == nil {
		return p
	}
	why := "prometheus is not installed, so the tests against a real Prometheus are NOT RUN; install it with `apt-get install -y prometheus`"
	testenv.Missing(tb, "%s", why)
	return ""
}

// Options configure a Prometheus server.
type Options struct {
	// Targets are host:port addresses scraped at /metrics, as job
	// "testapp".
	Targets []string
	// ScrapeInterval is how often they are scraped, and how often rules
	// would be evaluated; 250ms when zero.
	ScrapeInterval time.Duration
	// BasicAuth, when set, makes the server refuse every request that does
	// not carry this user name and password (Prometheus's own
	// --web.config.file); the Server's own calls send them.
	BasicAuth *BasicAuth
	// TLS serves https, with a certificate for 127.0.0.1 made for the
	// test: Server.CAFile verifies it.
	TLS bool
}

// BasicAuth is a user name and a password.
type BasicAuth struct {
	Username, Password string
}

// Server is a running prometheus process.
type Server struct {
	// URL is its base URL, http://127.0.0.1:PORT (https with Options.TLS).
	URL string
	// CAFile is the PEM certificate that verifies the server with
	// Options.TLS; empty otherwise.
	CAFile string
	API    promv1.API
	opts   Options
	dir    string
	cmd    *exec.Cmd
	client *http.Client
	done   chan struct{}
	once   sync.Once
}

// Start writes a configuration scraping o.Targets, starts prometheus with
// it on a free loopback port and temporary storage, and waits until it is
// ready. The server is stopped when the test ends.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	bin := Binary(tb)
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = 250 * time.Millisecond
	}
	dir := tb.TempDir()
	targets := make([]string, len(o.Targets))
	for i, t := range o.Targets {
		targets[i] = fmt.Sprintf("%q", t)
	}
	interval := model.Duration(o.ScrapeInterval).String()
	config := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
scrape_configs:
  - job_name: testapp
    static_configs:
      - targets: [%[2]s]
`, interval, strings.Join(targets, ", "))
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	web, caFile, client := webConfig(tb, dir, o)
	scheme := "http://"
	if o.TLS {
		scheme = "https://"
	}
	var lastErr error
	for range 3 { // a port taken between finding it and binding it: again
		s := &Server{opts: o, dir: dir, CAFile: caFile, client: client, done: make(chan struct{})}
		addr := FreeAddr(tb)
		s.URL = scheme + addr
		logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
		if err != nil {
			tb.Fatal(err)
		}
		args := []string{
			"--config.file=" + configFile,
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr,
			"--storage.tsdb.retention.time=1d",
			"--log.level=warn",
		}
		if web != "" {
			args = append(args, "--web.config.file="+web)
		}
		s.cmd = exec.Command(bin, args...)
		s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
		if err := s.cmd.Start(); err != nil {
			logFile.Close()
			tb.Fatalf("start prometheus: %v", err)
		}
		go func() { s.cmd.Wait(); logFile.Close(); close(s.done) }()
		tb.Cleanup(func() {
			s.Stop()
			if tb.Failed() {
				tb.Logf("prometheus log:\n%s", s.Log())
			}
		})
		if lastErr = s.waitReady(30 * time.Second); lastErr == nil {
			client, err := api.NewClient(api.Config{Address: s.URL, Client: s.client})
			if err != nil {
				tb.Fatal(err)
			}
			s.API = promv1.NewAPI(client)
			return s
		}
		s.Stop()
	}
	tb.Fatalf("prometheus did not start: %v", lastErr)
	return nil
}

// webConfig writes Prometheus's web configuration for o's basic auth and
// TLS, and returns its path (empty when o asks for neither), the CA file
// for TLS, and a client that gets through.
func webConfig(tb testing.TB, dir string, o Options) (file, caFile string, client *http.Client) {
	tb.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	var rt http.RoundTripper = transport
	client = &http.Client{Transport: rt}
	if o.BasicAuth == nil && !o.TLS {
		return "", "", client
	}
	var web strings.Builder
	if o.TLS {
		cert, key, pool := selfSigned(tb)
		certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		for f, data := range map[string][]byte{certFile: cert, keyFile: key} {
			if err := os.WriteFile(f, data, 0o600); err != nil {
				tb.Fatal(err)
			}
		}
		caFile = certFile
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		fmt.Fprintf(&web, "tls_server_config:\n  cert_file: %q\n  key_file: %q\n", certFile, keyFile)
	}
	if b := o.BasicAuth; b != nil {
		hash, err := bcrypt.GenerateFromPassword([]byte(b.Password), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(&web, "basic_auth_users:\n  %q: %q\n", b.Username, hash)
		client.Transport = basicAuth{b: *b, next: rt}
	}
	file = filepath.Join(dir, "web.yml")
	if err := os.WriteFile(file, []byte(web.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return file, caFile, client
}

// basicAuth sends a user name and password with every request.
type basicAuth struct {
	b    BasicAuth
	next http.RoundTripper
}

func (a basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(a.b.Username, a.b.Password)
	return a.next.RoundTrip(r)
}

// selfSigned makes a certificate for 127.0.0.1 that is its own CA, and
// returns it and its key in PEM, and a pool that trusts it.
func selfSigned(tb testing.TB) (cert, key []byte, pool *x509.CertPool) {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "promtest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(parsed)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), pool
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("prometheus exited: %s", s.Log())
		default:
		}
		resp, err := s.client.Get(s.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %s", timeout)
}

// Log returns what prometheus wrote so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "prometheus.log"))
	return string(b)
}

// Stop stops prometheus (SIGTERM, then SIGKILL after 10s) and waits for it
// to exit. It may be called more than once.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// WaitUp waits until every target has been scraped successfully and the
// query has a value, and returns it.
func (s *Server) WaitUp(tb testing.TB, query string, timeout time.Duration) float64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		up, _, _, err := s.API.Query(ctx, `min(up{job="testapp"})`, time.Now())
		v, _, _, err2 := s.API.Query(ctx, query, time.Now())
		cancel()
		if err == nil && err2 == nil {
			if vec, ok := up.(model.Vector); ok && len(vec) == 1 && vec[0].Value == 1 {
				if vec, ok := v.(model.Vector); ok && len(vec) == 1 {
					return float64(vec[0].Value)
				}
			}
		}
		last = fmt.Sprintf("up: %v (%v); %s: %v (%v)", up, err, query, v, err2)
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("prometheus: targets not up within %s: %s", timeout, last)
	return 0
}

// FreeAddr returns a loopback host:port that nothing listened on a moment
// ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// App is a testapp process serving on a loopback port.
type App struct {
	// Addr is its host:port, URL its base URL.
	Addr, URL string
	cmd       *exec.Cmd
	done      chan struct{}
}

// StartApp builds and starts testapp serving as version, and waits until it
// answers. It is stopped when the test ends.
func StartApp(tb testing.TB, version string) *App {
	tb.Helper()
	bin := testapp.Binary(tb)
	for range 3 {
		a := &App{Addr: FreeAddr(tb), done: make(chan struct{})}
		a.URL = "http://" + a.Addr
		a.cmd = exec.Command(bin, "serve", "-addr", a.Addr, "-version", version)
		var out strings.Builder
		a.cmd.Stdout, a.cmd.Stderr = &out, &out
		if err := a.cmd.Start(); err != nil {
			tb.Fatalf("start testapp: %v", err)
		}
		go func() { a.cmd.Wait(); close(a.done) }()
		tb.Cleanup(a.stop)
		for range 100 {
			select {
			case <-a.done:
			default:
				if resp, err := http.Get(a.URL + "/health"); err == nil {
					resp.Body.Close()
					return a
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			break
		}
		a.stop()
		tb.Logf("testapp did not start: %s", out.String())
	}
	tb.Fatal("testapp did not start")
	return nil
}

func (a *App) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// Set changes the app's behaviour through /control: errorRate (0..1),
// latency (a Go duration), unhealthy (true or false).
func (a *App) Set(tb testing.TB, fields map[string]string) {
	tb.Helper()
	form := url.Values{}
	for k, v := range fields {
		form.Set(k, v)
	}
	resp, err := http.PostForm(a.URL+"/control", form)
	if err != nil {
		tb.Fatalf("testapp control: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("testapp control %v: %s", fields, resp.Status)
	}
}

// Load sends requests to the app, about rate a second, until the returned
// stop is called, the test ends, or max requests have been sent. Failed
// requests are the point of some tests and are not reported.
func (a *App) Load(tb testing.TB, rate, max int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		sem := make(chan struct{}, 16)
		for range max {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // the app is slow on purpose: skip, do not pile up
			}
			inflight.Go(func() {
				defer func() { <-sem }()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/", nil)
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
			})
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	tb.Cleanup(stop)
	return stop
}
