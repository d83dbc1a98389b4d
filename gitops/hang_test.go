package gitops

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/testenv"
)

// A remote that accepts connections and never answers, over every network
// transport, and then recovers: every call returns within its timeout, and
// the Repo works again once the remote does.

// hangingProxy forwards TCP connections to a real server, or, once told
// to, accepts them and never answers: it reads what the client sends and
// writes nothing back.
type hangingProxy struct {
	ln     net.Listener
	target string
	// forward is how many more connections are forwarded before the
	// proxy falls silent; negative: all of them.
	forward atomic.Int64

	mu    sync.Mutex
	conns []net.Conn
}

func newHangingProxy(t *testing.T, target string) *hangingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangingProxy{ln: ln, target: target}
	p.forward.Store(-1)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.closeAll()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			if n := p.forward.Load(); n == 0 || (n > 0 && !p.forward.CompareAndSwap(n, n-1)) {
				wg.Go(func() { _, _ = io.Copy(io.Discard, c) }) // silent
				continue
			}
			wg.Go(func() { p.pipe(c) })
		}
	})
	return p
}

func (p *hangingProxy) addr() string { return p.ln.Addr().String() }

func (p *hangingProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *hangingProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *hangingProxy) pipe(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.track(s)
	go func() {
		_, _ = io.Copy(s, c)
		s.Close()
	}()
	_, _ = io.Copy(c, s)
	c.Close()
}

// silent makes the proxy forward the next n connections, then fall
// silent; the connections open now are closed, so that a pooled one is
// not reused.
func (p *hangingProxy) silent(n int64) {
	p.forward.Store(n)
	p.closeAll()
}

// recover makes the proxy forward every new connection again.
func (p *hangingProxy) recover() { p.forward.Store(-1) }

// hangingHandler serves git over http, or, for the requests it is told to
// hang, never writes a response: it waits until the client gives up.
type hangingHandler struct {
	next http.Handler
	// hang picks the requests to hang: "" none, "all", or a service
	// ("git-upload-pack" hangs the fetch's POST, not the listing).
	hang atomic.Value
	stop chan struct{} // closed when the test ends
}

func (h *hangingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch hang, _ := h.hang.Load().(string); {
	case hang == "all", hang != "" && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/"+hang):
		// Reading the body lets net/http notice the client leave.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-h.stop:
		}
		return
	}
	h.next.ServeHTTP(w, r)
}

// hangingRemote is a repository behind a server that can be told to hang.
type hangingRemote struct {
	dir, url string
	auth     Auth
	// all hangs every connection; fetch only the fetch's (the listing
	// before it is answered); none recovers.
	all, fetch, none func()
}

func hangingRemotes(t *testing.T) map[string]hangingRemote {
	base := t.TempDir()
	out := map[string]hangingRemote{}

	dir := bare(t, base, "git.git", initialFiles)
	p := newHangingProxy(t, strings.TrimSuffix(strings.TrimPrefix(gitDaemon(t, base), "git://"), "/"))
	out["git"] = hangingRemote{dir: dir, url: "git://" + p.addr() + "/git.git",
		all: func() { p.silent(0) }, fetch: func() { p.silent(1) }, none: p.recover}

	dir = bare(t, base, "http.git", initialFiles)
	h := &hangingHandler{next: httpBackend(t, base), stop: make(chan struct{})}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(h.stop) }) // before srv.Close
	out["http"] = hangingRemote{dir: dir, url: srv.URL + "/http.git",
		all: func() { h.hang.Store("all") }, fetch: func() { h.hang.Store("git-upload-pack") }, none: func() { h.hang.Store("") }}

	dir = bare(t, base, "ssh.git", initialFiles)
	key, pub := sshKeyFile(t, "")
	sshSrv := newSSHServer(t, base, pub)
	p2 := newHangingProxy(t, sshSrv.addr)
	out["ssh"] = hangingRemote{dir: dir, url: "ssh://git@" + p2.addr() + "/ssh.git",
		auth: Auth{SSHKeyFile: key, KnownHostsFile: knownHostsFile(t, p2.addr(), sshSrv.hostKey)},
		all:  func() { p2.silent(0) }, fetch: func() { p2.silent(1) }, none: p2.recover}
	return out
}

func TestHungRemote(t *testing.T) {
	needGit(t)
	// Long enough for a loaded machine to answer a healthy call, short
	// enough for the test.
	timeouts := Timeouts{List: 2 * time.Second, Fetch: 3 * time.Second, Push: 2500 * time.Millisecond}
	const margin = time.Second
	for name, rem := range hangingRemotes(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// The calls under test get a context without a deadline, as
			// the daemon's loop has: only the timeouts can end them.
			bg := context.Background()
			within := func(what string, limit time.Duration, f func() error) error {
				t.Helper()
				start := time.Now()
				err := f()
				took := time.Since(start)
				if took > limit+margin {
					t.Errorf("%s took %v, want at most %v + %v", what, took.Round(time.Millisecond), limit, margin)
				}
				t.Logf("%s: %v after %v", what, err, took.Round(time.Millisecond))
				return err
			}
			hung := func(what string, limit time.Duration, f func() error) {
				t.Helper()
				if err := within(what, limit, f); !errors.Is(err, ErrNetwork) || !strings.Contains(err.Error(), "no answer") {
					t.Errorf("%s against a hung remote: %v, want ErrNetwork saying there was no answer", what, err)
				}
			}
			opts := Options{URL: rem.url, Auth: rem.auth, Timeouts: timeouts}
			r, err := Open(bg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Sync(bg); err != nil {
				t.Fatal(err)
			}

			// The remote accepts connections and never answers.
			rem.all()
			hung("Open", timeouts.List, func() error { _, err := Open(bg, opts); return err })
			hung("Head", timeouts.List, func() error { _, err := r.Head(bg); return err })
			hung("Sync", timeouts.List, func() error { _, err := r.Sync(bg); return err })
			// A caller's earlier deadline wins, and is reported as its.
			ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
			err = within("Head with a 300ms context", 300*time.Millisecond, func() error { _, err := r.Head(ctx); return err })
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Head with a 300ms context: %v, want the context's deadline", err)
			}
			// A push that hangs holds the lock no longer than its
			// timeout: a ReadFile waiting for it gets it.
			pushed := make(chan struct{})
			go func() {
				defer close(pushed)
				hung("Commit", timeouts.Push, func() error {
					_, err := r.Commit(bg, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("hung\n")})
					return err
				})
			}()
			time.Sleep(100 * time.Millisecond)
			within("ReadFile during the hung Commit", timeouts.Push, func() error { _, err := r.ReadFile("status/hal9.yaml"); return err })
			<-pushed

			// The remote answers again: so does the Repo.
			rem.none()
			if _, err := r.Head(bg); err != nil {
				t.Fatalf("Head after the remote recovered: %v", err)
			}
			h, err := r.Commit(bg, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("recovered\n")})
			if err != nil {
				t.Fatalf("Commit after the remote recovered: %v", err)
			}
			if got := run(t, rem.dir, "rev-parse", "main"); got != string(h) {
				t.Errorf("remote main = %s, want %s", got, h)
			}

			// Someone pushes; the listing is answered and the fetch hangs.
			person := clonePerson(t, rem.dir)
			writeFile(t, filepath.Join(person, "plans/hal9.yaml"), planYAML("hal9", "canary", 25))
			run(t, person, "commit", "-q", "-am", "canary to 25%")
			run(t, person, "push", "-q", "origin", "main")
			rem.fetch()
			hung("Sync with a hung fetch", timeouts.List+timeouts.Fetch, func() error { _, err := r.Sync(bg); return err })

			rem.none()
			s, err := r.Sync(bg)
			if err != nil {
				t.Fatalf("Sync after the remote recovered: %v", err)
			}
			if want := run(t, rem.dir, "rev-parse", "main"); string(s.Commit) != want || !s.Changed {
				t.Errorf("Sync after the remote recovered = %s changed=%v, want %s", s.Commit, s.Changed, want)
			}
			if _, err := r.Commit(bg, CommitRequest{Message: "status", Author: daemon, Changes: writeStatus("again\n")}); err != nil {
				t.Errorf("Commit after the remote recovered: %v", err)
			}
		})
	}
}

func TestTimeoutsDefaults(t *testing.T) {
	got, err := Timeouts{Push: time.Minute}.withDefaults()
	if err != nil || got != (Timeouts{List: DefaultListTimeout, Fetch: DefaultFetchTimeout, Push: time.Minute}) {
		t.Errorf("withDefaults = %+v, %v", got, err)
	}
	if _, err := Open(context.Background(), Options{URL: "/nowhere", Timeouts: Timeouts{List: -time.Second}}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("Open with a negative timeout: %v", err)
	}
}

// blackHole returns the address of a listener whose accept queue is full:
// the kernel drops further SYNs, so a dial there hangs as one to a host
// behind a firewall that drops packets.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue: the connections that get in stay unaccepted.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	testenv.Missing(t, "the kernel accepts every connection to a listener that never accepts: cannot make a dial hang")
	return ""
}

// TestDialHangs checks the one wait of go-git that no context reaches: a
// git:// dial is net.Dial's, which waits for the kernel's connect timeout
// (minutes).
func TestDialHangs(t *testing.T) {
	addr := blackHole(t)
	const limit = time.Second
	start := time.Now()
	_, err := Open(context.Background(), Options{URL: "git://" + addr + "/r.git", Timeouts: Timeouts{List: limit}})
	took := time.Since(start)
	if !errors.Is(err, ErrNetwork) || took > limit+time.Second {
		t.Errorf("Open of a host that drops SYNs: %v after %v, want ErrNetwork after %v", err, took, limit)
	}
	t.Logf("%v after %v", err, took.Round(time.Millisecond))
}
