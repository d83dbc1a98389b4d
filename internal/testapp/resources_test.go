package testapp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestResourcesBurnAndHold sets CPU and memory through /control: the
// process burns about the share asked, holds the bytes asked, rejects more
// than the maximums, and stops burning at 0.
func TestResourcesBurnAndHold(t *testing.T) {
	a := New("v1", Behaviour{})
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	post := func(form url.Values) int {
		t.Helper()
		resp, err := http.PostForm(srv.URL+"/control", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(url.Values{"cpuMillicores": {"300"}, "holdBytes": {"8388608"}}); code != http.StatusOK {
		t.Fatalf("POST /control: %d", code)
	}
	t.Cleanup(func() { a.Set(Behaviour{}) })

	before, start := cpuTime(t), time.Now()
	time.Sleep(time.Second)
	used := (cpuTime(t) - before).Seconds() / time.Since(start).Seconds()
	t.Logf("burning 300 millicores used %.2f CPU", used)
	// The test process does little else; a busy machine may give it less.
	if used < 0.15 || used > 0.6 {
		t.Errorf("burning 300 millicores used %.2f CPU, want about 0.3", used)
	}
	a.mu.Lock()
	held := len(a.held)
	a.mu.Unlock()
	if held != 8<<20 {
		t.Errorf("holds %d bytes, want %d", held, 8<<20)
	}

	for _, bad := range []url.Values{{"cpuMillicores": {"1001"}}, {"holdBytes": {"268435457"}}, {"holdBytes": {"-1"}}} {
		if code := post(bad); code != http.StatusBadRequest {
			t.Errorf("POST /control %s: %d, want 400", bad.Encode(), code)
		}
	}

	if code := post(url.Values{"cpuMillicores": {"0"}, "holdBytes": {"0"}}); code != http.StatusOK {
		t.Fatalf("POST /control: %d", code)
	}
	deadline := time.Now().Add(time.Second)
	for {
		a.mu.Lock()
		burning, held := a.burning, len(a.held)
		a.mu.Unlock()
		if !burning && held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after setting 0: burning %t, holding %d bytes", burning, held)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(srv.URL + "/control")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "cpuMillicores=0 holdBytes=0") {
		t.Errorf("GET /control = %q", body)
	}
}

// cpuTime is the CPU time the process has used.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
