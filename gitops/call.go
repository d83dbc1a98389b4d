package gitops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/net/proxy"
)

// Timeouts bound the calls Repo makes to the remote, one by one: a call
// ends when its timeout passes or when the caller's context ends, whichever
// comes first, also when the remote accepted the connection and then never
// answers. A zero field takes its default.
type Timeouts struct {
	// List bounds one listing of the remote's refs: Open, Head, and the
	// check that starts Sync. Default 10s.
	List time.Duration
	// Fetch bounds one fetch of the branch head (Sync, Commit after it
	// lost a race) or of the history the signature checks read. Default
	// 60s.
	Fetch time.Duration
	// Push bounds one push of Commit. Default 30s.
	Push time.Duration
}

// The default Timeouts.
const (
	DefaultListTimeout  = 10 * time.Second
	DefaultFetchTimeout = 60 * time.Second
	DefaultPushTimeout  = 30 * time.Second
)

func (t Timeouts) withDefaults() (Timeouts, error) {
	for _, f := range []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{{"list", &t.List, DefaultListTimeout}, {"fetch", &t.Fetch, DefaultFetchTimeout}, {"push", &t.Push, DefaultPushTimeout}} {
		switch {
		case *f.d < 0:
			return t, fmt.Errorf("the %s timeout %v is negative", f.name, *f.d)
		case *f.d == 0:
			*f.d = f.def
		}
	}
	return t, nil
}

// timedOut is the error of a call that got no answer in time. It is a
// network error: the remote, or the way to it, is stuck, and a later call
// may find it well again.
func timedOut(limit time.Duration) error {
	return &kindError{kind: ErrNetwork, msg: fmt.Sprintf("no answer from the remote within %v", limit)}
}

// call runs f, one call to the remote, with a context that ends after limit
// or with ctx, and returns when that context ends even if f has not: f is
// then abandoned, and whatever it works on must not be used again. When the
// limit passed first the error is timedOut's; when ctx ended first, f's
// error (which the caller reports as ctx's).
//
// go-git does not honour the context everywhere: a git:// dial is
// net.Dial's (the kernel's connect timeout, minutes for a host that drops
// packets), an ssh dial, handshake and session start take no context at all
// (a server that never sends its banner holds them forever), and a server
// that closes a git:// connection without a word costs a fixed 10s wait for
// an error line that cannot come. Returning at the deadline is what makes a
// hung remote unable to hold Repo's lock. What f leaves behind ends on its
// own: go-git closes git:// connections when their context ends, net/http
// closes http ones, and proxy closes ssh ones (see callDialer), so an
// abandoned call does not hold a connection past its deadline, except a
// git:// dial to a silent host, which the kernel ends.
//
// proxy is what f passes to go-git as ProxyOptions when the URL is an ssh
// one: it makes go-git dial through callDialer.
func call(ctx context.Context, limit time.Duration, ssh bool, f func(ctx context.Context, proxy transport.ProxyOptions) error) error {
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var po transport.ProxyOptions
	if ssh {
		var done func()
		po, done = registerCall(cctx)
		defer done()
	}
	errc := make(chan error, 1)
	go func() { errc <- f(cctx, po) }()
	var err error
	select {
	case err = <-errc:
	case <-cctx.Done():
		select {
		case err = <-errc: // f ended just as the context did
		default:
			err = cctx.Err() // f is abandoned
		}
	}
	if err == nil || cctx.Err() == nil {
		return err
	}
	// Whatever f made of the end of its context ("context deadline
	// exceeded", "use of closed network connection"), say what it was.
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return timedOut(limit)
}

// callScheme is the scheme of the proxy URL that makes go-git's ssh
// transport dial through callDialer. go-git's ssh transport dials with
// x/net/proxy and passes no context to the SSH handshake; the only way to
// reach its connection is a proxy dialer, registered with x/net/proxy under
// this scheme and named per call in transport.ProxyOptions.
const callScheme = "hal9-migrate-call"

var (
	registerDialer sync.Once
	callSeq        atomic.Uint64
	calls          sync.Map // call number (string) → context.Context
)

// registerCall makes a proxy URL that names ctx, for the duration of one
// call, and returns the function that forgets it.
func registerCall(ctx context.Context) (transport.ProxyOptions, func()) {
	registerDialer.Do(func() {
		proxy.RegisterDialerType(callScheme, func(u *url.URL, _ proxy.Dialer) (proxy.Dialer, error) {
			v, ok := calls.Load(u.Host)
			if !ok {
				return nil, errors.New("the call is over")
			}
			return callDialer{call: v.(context.Context)}, nil
		})
	})
	id := strconv.FormatUint(callSeq.Add(1), 10)
	calls.Store(id, ctx)
	return transport.ProxyOptions{URL: callScheme + "://" + id}, func() { calls.Delete(id) }
}

// callDialer dials as go-git does without a proxy (x/net/proxy's
// environment: ALL_PROXY, NO_PROXY), and closes the connection when the
// call's context ends: that ends an SSH handshake with a server that never
// sends its banner, and every read and write after it.
type callDialer struct{ call context.Context }

func (d callDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d callDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.call, cancel)
	defer stop()
	conn, err := proxy.Dial(ctx, network, addr)
	if err != nil {
		if d.call.Err() != nil {
			return nil, d.call.Err()
		}
		return nil, err
	}
	// The call's context always ends, with the call at the latest, so
	// this never outlives it. go-git has closed the connection by then
	// unless the call was abandoned.
	context.AfterFunc(d.call, func() { _ = conn.Close() })
	return conn, nil
}
