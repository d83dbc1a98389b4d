package daemon

import (
	"bytes"
	"context"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// chromium finds Debian's chromium, or skips (fails in CI).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.Missing(t, "chromium is not installed (apt-get install chromium); the status page is not rendered")
	return ""
}

// TestStatusPageInABrowser renders the status page in headless Chromium:
// the DOM the browser built shows the migration, its timeline and its
// guardrails, and a screenshot is kept (in $HAL9_ARTIFACTS when set, as CI
// does).
func TestStatusPageInABrowser(t *testing.T) {
	bin := chromium(t)
	r := newRig(t)
	r.guards.readings = []reconcile.Reading{
		{Name: "errors", Health: reconcile.Pending, Value: 0.061, Bound: "max 0.05 for 5m", Since: t0},
		{Name: "health", Health: reconcile.Healthy, Value: 200, Bound: "expect 2xx, 3 failures in a row", Since: t0},
		{Name: "p99-vs-stable", Health: reconcile.Healthy, Value: 0.125, Bound: "mann-whitney at 95%: at most stable +20%", Since: t0,
			Compare: func() *reconcile.Comparison {
				c := reconcile.NewComparison(0.12, 0.125)
				p := 0.41
				c.Test, c.PValue, c.Verdict = "mann-whitney", &p, reconcile.Pass
				return &c
			}()},
	}
	r.guards.readings[0].Health = reconcile.Healthy
	r.until(t, 100, func(rec store.Record) bool { return at("canary", 10)(rec) && rec.Status == reconcile.StatusHolding })
	r.guards.readings[0].Health = reconcile.Pending
	if err := r.d.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.d.Handler(HTTPOptions{}))
	defer srv.Close()

	dir := os.Getenv("HAL9_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "status-page.png")
	profile := t.TempDir()
	args := func(extra ...string) []string {
		return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--user-data-dir=" + profile, "--window-size=1280,1400", "--hide-scrollbars"}, extra...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	dom, err := exec.CommandContext(ctx, bin, args("--dump-dom", srv.URL+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, want := range []string{`<section class="migration" id="base">`, `class="step-current"`, "canary 10%",
		`class="h-Pending">Pending`, "max 0.05 for 5m", "holding at the target, canary 10%",
		"candidate median 0.125 vs stable 0.12 (+4.17%), p=0.41: Pass"} {
		if !strings.Contains(string(dom), want) {
			t.Errorf("the page as the browser built it lacks %q", want)
		}
	}

	if out, err := exec.CommandContext(ctx, bin, args("--screenshot="+shot, srv.URL+"/")...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if bounds := img.Bounds(); bounds.Dx() != 1280 || bounds.Dy() != 1400 {
		t.Errorf("screenshot %v", bounds)
	}
	// The header bar is drawn: its top-left pixel is the page's dark blue,
	// not a blank white page.
	if cr, cg, cb, _ := img.At(5, 5).RGBA(); cr>>8 > 60 || cg>>8 > 60 || cb>>8 > 80 {
		t.Errorf("the top of the screenshot is not the header bar: %d %d %d", cr>>8, cg>>8, cb>>8)
	}
	// The current step is drawn in the page's blue, white on blue: find a
	// run of it in the timeline's row.
	blue := 0
	for x := 0; x < 1280; x++ {
		for y := 180; y < 260; y++ {
			if cr, cg, cb, _ := img.At(x, y).RGBA(); cr>>8 < 70 && cg>>8 > 100 && cg>>8 < 150 && cb>>8 > 200 {
				blue++
			}
		}
	}
	if blue < 2000 {
		t.Errorf("the current step is not drawn in blue (%d blue pixels in the timeline's row)", blue)
	}
	t.Logf("screenshot: %s", shot)
}
