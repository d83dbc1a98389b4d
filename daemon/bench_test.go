package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/hal9ai/hal9-migrate/drivers/fake"
	"github.com/hal9ai/hal9-migrate/gitops"
	"github.com/hal9ai/hal9-migrate/internal/gittest"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
	"github.com/hal9ai/hal9-migrate/store"
)

// BenchmarkWebhookToDriver measures, on loopback, from a push webhook
// arriving to the driver applying the position the pushed commit asks for.
// The daemon polls only hourly, so only the webhook can wake it. Each
// iteration a person pushes a new target (canary 5% and 10% in turn, with
// no soak, so each move is one step), then the webhook is posted.
func BenchmarkWebhookToDriver(b *testing.B) {
	base, err := os.ReadFile("../plan/testdata/base.yaml")
	if err != nil {
		b.Fatal(err)
	}
	src := strings.Replace(strings.Replace(string(base), "      soak: 2h\n", "", 1), "      soak: 1h\n", "", 1)
	root := b.TempDir()
	remote := gittest.Bare(b, root, "plans", map[string]string{"plans/shop.yaml": src})
	url := gittest.Daemon(b, root) + "plans.git"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	repo, err := gitops.Open(ctx, gitops.Options{URL: url, Path: "plans"})
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	v, _ := plan.NewValidator()
	f := fake.New()
	d := &Daemon{
		Git: repo, Validator: v, Store: st, Clock: clock.RealClock{}, Poll: time.Hour, Interval: time.Hour,
		Author: gitops.Signature{Name: "hal9-migrate", Email: "bot@example.com"},
		Runner: &reconcile.Runner{Store: st, Open: f.Opener(), Guards: &guards{readings: healthy()}, Clock: clock.RealClock{}, Workers: 2},
	}
	const secret = "bench"
	srv := httptest.NewServer(gitops.WebhookHandler([]byte(secret), func(gitops.Push) { d.Wake() }))
	defer srv.Close()

	// Walk to shadow, canary 5% (the checkpoint is taken on the way).
	go func() { _ = d.Run(ctx) }()
	work := gittest.Clone(b, remote)
	push := func(pct int) {
		path := filepath.Join(work, "plans", "shop.yaml")
		gittest.Git(b, work, "pull", "-q", "--rebase", "origin", "main")
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		edited, err := plan.ApplyEdits(path, data, plan.SetTarget(plan.Target{Phase: "canary", Percentage: &pct}))
		if err != nil {
			b.Fatal(err)
		}
		gittest.Write(b, path, string(edited))
		gittest.Git(b, work, "commit", "-q", "-am", "target")
		gittest.PushRebasing(b, work)
	}
	hook := func() {
		body := `{"ref":"refs/heads/main","after":"x"}`
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(body))
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(body))
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	waitTraffic := func(pct int) {
		for deadline := time.Now().Add(30 * time.Second); f.Driver("base").State().Traffic != pct; {
			if time.Now().After(deadline) {
				b.Fatalf("driver never reached %d%%: %+v", pct, f.Driver("base").State())
			}
			time.Sleep(time.Millisecond)
		}
	}
	push(5)
	for deadline := time.Now().Add(30 * time.Second); f.Driver("base").State().Traffic != 5; {
		if time.Now().After(deadline) {
			b.Fatalf("the daemon did not reach canary 5%%: %+v", f.Driver("base").State())
		}
		hook()
		time.Sleep(50 * time.Millisecond)
	}

	var total time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		pct := []int{10, 5}[i%2]
		push(pct)
		b.StartTimer()
		start := time.Now()
		hook()
		waitTraffic(pct)
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/webhook-to-apply")
}
