package docker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/internal/dockertest"
)

// requests is how many requests a measured split is over.
const requests = 2000

// tally is what clients saw: responses by X-Version, and failures.
type tally struct {
	byVersion map[string]int
	failed    int
	firstErr  string
}

func (t tally) share(version string) float64 {
	total := 0
	for _, n := range t.byVersion {
		total += n
	}
	if total == 0 {
		return 0
	}
	return 100 * float64(t.byVersion[version]) / float64(total)
}

// send sends n GET requests to addr from four clients, each on fresh
// connections, and tallies the answers. It is bounded: a request that takes
// over five seconds fails.
func send(t *testing.T, addr, path string, n int) tally {
	t.Helper()
	var mu sync.Mutex
	res := tally{byVersion: map[string]int{}}
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for i := range next {
				resp, err := c.Get("http://" + addr + path + "?i=" + strconv.Itoa(i))
				mu.Lock()
				switch {
				case err != nil:
					res.failed++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				case resp.StatusCode != http.StatusOK:
					res.failed++
					if res.firstErr == "" {
						res.firstErr = resp.Status
					}
				default:
					res.byVersion[resp.Header.Get("X-Version")]++
				}
				mu.Unlock()
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return res
}

// served reads a testapp's count of the requests it answered with 200.
func served(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", addr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "http_requests_total{") && strings.Contains(line, `code="200"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics of %s: %q: %v", addr, line, err)
			}
			return int(v)
		}
	}
	t.Fatalf("metrics of %s: no http_requests_total{code=\"200\"}", addr)
	return 0
}

// applyAndSettle applies target, waits for Observe to show it, then waits
// for nginx to route by it: a reload is a signal nginx's master acts on in
// its own time, and until its new workers run the old ones take new
// connections.
func applyAndSettle(t *testing.T, r *rig, target drivers.Target) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := r.drv.Apply(ctx, target); err != nil {
		t.Fatalf("Apply(%+v): %v", target, err)
	}
	st, err := drivertest.Converge(ctx, r.drv, target, 0, 30*time.Second, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if st.Traffic != target.Traffic || st.Mirror != target.Mirror {
		t.Fatalf("Observe after Apply(%+v) = %+v", target, st)
	}
	routed(t, r, target.Traffic)
}

// routed waits, for up to 30 seconds, until a batch of 100 requests
// through nginx reaches the candidate at traffic percent, within 3 points.
func routed(t *testing.T, r *rig, traffic int) {
	t.Helper()
	var last tally
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		last = send(t, r.addr, "/", 100)
		if share := last.share("candidate"); last.failed == 0 && share >= float64(traffic)-3 && share <= float64(traffic)+3 {
			return
		}
	}
	t.Fatalf("nginx does not route %d%% to the candidate after 30s: the last 100 requests gave %v, %d failed (%s)", traffic, last.byVersion, last.failed, last.firstErr)
}

// TestSplitThroughNginx sends 2,000 requests through nginx at each canary
// share and checks the candidate answered that share of them, within three
// percentage points, with nginx on the host and in a container.
func TestSplitThroughNginx(t *testing.T) {
	t.Parallel()
	for _, router := range []string{routerHost, routerContainer} {
		t.Run(router, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, setup{router: router})
			for _, p := range []int{10, 25, 50} {
				applyAndSettle(t, r, drivers.Target{Traffic: p})
				got := send(t, r.addr, "/", requests)
				if got.failed > 0 {
					t.Fatalf("at %d%%: %d of %d requests failed, the first with %s", p, got.failed, requests, got.firstErr)
				}
				share := got.share("candidate")
				t.Logf("at %d%%: candidate answered %.1f%% of %d requests (%v)", p, share, requests, got.byVersion)
				if share < float64(p)-3 || share > float64(p)+3 {
					t.Errorf("at %d%%: candidate answered %.1f%% of %d requests, want %d±3%%", p, share, requests, p)
				}
			}
		})
	}
}

// TestShadowThroughNginx mirrors requests to the candidate: clients only
// ever see stable's answers while the candidate's own count of requests
// grows by the mirrored share.
func TestShadowThroughNginx(t *testing.T) {
	t.Parallel()
	r := newRig(t, setup{router: routerHost})
	candAddr := dockertest.HostAddr(t, r.candidate, "8080")
	// Copies counted in each phase, and what each phase should have.
	var counted, wanted, undelivered, end int
	for _, mirror := range []int{100, 50} {
		t.Run(fmt.Sprintf("mirror-%d", mirror), func(t *testing.T) {
			applyAndSettle(t, r, drivers.Target{Mirror: mirror})
			before := served(t, candAddr)
			got := send(t, r.addr, "/shadow", requests)
			if got.failed > 0 {
				t.Fatalf("%d of %d requests failed, the first with %s", got.failed, requests, got.firstErr)
			}
			if got.byVersion["stable"] != requests {
				t.Errorf("clients saw %v, want stable's answer to all %d requests", got.byVersion, requests)
			}
			// Mirrored copies are sent alongside and may trail the
			// answers on a busy machine, by seconds (a CI run saw 154
			// of 2000 come only after a two-second lull, nginx logging
			// no failure): wait until all have come or none has for
			// five seconds.
			want := requests * mirror / 100
			mirrored, last := 0, time.Now()
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && time.Since(last) < 5*time.Second; {
				if n := served(t, candAddr) - before; n != mirrored {
					mirrored, last = n, time.Now()
				}
				if mirrored >= want {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			// A copy nginx sent and could not deliver (the machine too
			// busy to connect within the mirror's 2s) is in its error
			// log: it was mirrored, and counts as such.
			dropped := droppedCopies(t, r.hostNginx) - undelivered
			t.Logf("mirror %d%%: the candidate served %d mirrored copies of %d requests; nginx logged %d copies it could not deliver",
				mirror, mirrored, requests, dropped)
			counted, wanted, undelivered, end = counted+mirrored, wanted+want, undelivered+dropped, before+mirrored
			// split_clients picks by a random request id, five points
			// either way. Copies that trail past the lull show up in the
			// next phase or later (a loaded CI machine counted 1842 and
			// then 1118, another time 1455 and 1130): a phase must have
			// had at least half its copies, and no more than its share
			// and the last phase's stragglers; the phases together are
			// held tighter below, once every copy had time to come.
			lo, hi := want/2, requests*min(mirror+5, 100)/100+requests*10/100
			if mirrored+dropped < lo || mirrored > hi {
				t.Errorf("mirror %d%%: the candidate served %d copies of %d requests (%d more undeliverable), want %d..%d",
					mirror, mirrored, requests, dropped, lo, hi)
			}
		})
	}
	// Every copy, whichever phase it was counted in, given up to half a
	// minute more to come.
	// On a loaded machine some copies never come, and nginx logs none
	// of them (CI runs: 2866, then 2770, of 3000 after half a minute
	// more): fifteen points below, five above.
	lo, hi := wanted-requests*15/100, wanted+requests*5/100
	total := func() int { return counted + served(t, candAddr) - end }
	for deadline := time.Now().Add(30 * time.Second); total()+undelivered < lo && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	if total := total(); total+undelivered < lo || total > hi {
		t.Errorf("the two phases: the candidate served %d copies (%d more undeliverable), want %d..%d", total, undelivered, lo, hi)
	}
}

// control changes a testapp's behaviour through its /control endpoint.
func control(t *testing.T, addr string, form url.Values) {
	t.Helper()
	resp, err := http.PostForm("http://"+addr+"/control", form)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("control %s: %s", addr, resp.Status)
	}
}

// droppedCopies counts the mirrored copies nginx's error log says it could
// not deliver, each request once, and empties the log for the next count.
func droppedCopies(t *testing.T, n *dockertest.HostNginx) int {
	t.Helper()
	path := filepath.Join(n.Dir, "error.log")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `subrequest: "/.hal9-mirror/`) {
			continue
		}
		if _, req, ok := strings.Cut(line, `request: "`); ok {
			req, _, _ = strings.Cut(req, `"`)
			seen[req] = true
		}
	}
	if len(seen) > 0 {
		t.Logf("nginx could not deliver %d copies, for example: %s", len(seen), firstLine(string(b), `subrequest: "/.hal9-mirror/`))
	}
	return len(seen)
}

// firstLine returns the first line of s containing sub.
func firstLine(s, sub string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}
