package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ServerOptions bound what one connection may cost the daemon. The zero
// value of a field takes its default (DefaultServerOptions).
type ServerOptions struct {
	// ReadHeaderTimeout bounds reading a request's headers;
	// ReadTimeout reading the whole request, body included, so that a
	// client trickling its body a byte at a time is cut off.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// WriteTimeout bounds a request from the end of its headers to the
	// end of its answer. Handlers allowed to run longer (see Deadlines)
	// move it out for their own request.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its
	// next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
}

// DefaultServerOptions are the bounds of the daemon's HTTP server.
func DefaultServerOptions() ServerOptions {
	return ServerOptions{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// NewServer returns the daemon's HTTP server for h, which is normally
// Daemon.Handler: every timeout set, so that no client can hold a
// connection open by sending or reading slowly.
func NewServer(h http.Handler, o ServerOptions) *http.Server {
	def := DefaultServerOptions()
	orDefault := func(v, d time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return d
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = def.MaxHeaderBytes
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: orDefault(o.ReadHeaderTimeout, def.ReadHeaderTimeout),
		ReadTimeout:       orDefault(o.ReadTimeout, def.ReadTimeout),
		WriteTimeout:      orDefault(o.WriteTimeout, def.WriteTimeout),
		IdleTimeout:       orDefault(o.IdleTimeout, def.IdleTimeout),
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
}

// Deadlines bound the work of each kind of request; the zero value of a
// field takes its default (DefaultDeadlines). A handler's context ends at
// its deadline, and everything it calls (the store, Git, the driver,
// Prometheus) stops there.
type Deadlines struct {
	// Read bounds the answers read from the store and the latest
	// decisions: the migrations, checkpoints, the status page, /readyz,
	// /metrics, the last pre-check.
	Read time.Duration
	// Webhook bounds a push webhook and POST /api/v1/sync, which only
	// wake the loop.
	Webhook time.Duration
	// Checkpoint bounds taking a checkpoint on request: it waits for the
	// plan's running step to end, then snapshots the workloads.
	Checkpoint time.Duration
	// Precheck bounds a pre-check run: every plan's driver and
	// workloads, Git, Prometheus and, deep, every query once.
	Precheck time.Duration
	// Verify bounds POST /api/v1/migrations/{name}/verify, which runs
	// the named checks one after the other, jobs included: a job still
	// running at the deadline is reported as failed (and left to its
	// own timeout on the platform). Longer checks belong in a phase's
	// verify, which the loop runs without a client waiting.
	Verify time.Duration
}

// DefaultDeadlines are the deadlines of the daemon's handlers.
func DefaultDeadlines() Deadlines {
	return Deadlines{
		Read:       10 * time.Second,
		Webhook:    10 * time.Second,
		Checkpoint: 2 * time.Minute,
		Precheck:   2 * time.Minute,
		Verify:     time.Hour,
	}
}

func (d Deadlines) withDefaults() Deadlines {
	def := DefaultDeadlines()
	for _, f := range []struct{ v, d *time.Duration }{
		{&d.Read, &def.Read}, {&d.Webhook, &def.Webhook}, {&d.Checkpoint, &def.Checkpoint},
		{&d.Precheck, &def.Precheck}, {&d.Verify, &def.Verify},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	return d
}

// Request bodies: what the API's JSON requests may weigh, and a push
// webhook's payload (GitHub sends at most 25 MB, and gitops refuses more
// than 5 MiB).
const (
	maxAPIBody     = 64 << 10
	maxWebhookBody = 8 << 20
)

// answerGrace is the time a long handler's answer has to be written after
// its deadline.
const answerGrace = 10 * time.Second

// quick runs h under a deadline of d, with its body bounded to max bytes.
// It is for handlers that finish well within the server's ReadTimeout and
// WriteTimeout, which stay in force.
func quick(d time.Duration, max int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		r.Body = http.MaxBytesReader(w, r.Body, max)
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// lengthy runs h under a deadline of d, longer than the server's
// WriteTimeout allows a request. It first reads the whole body (at most max
// bytes) while the server's ReadTimeout still holds, so that a slow sender
// is cut off as on any other endpoint; only then does it move the
// connection's write deadline out to d and answerGrace. (Once the body is
// in, net/http itself lifts the read deadline while it waits for the
// client to hang up.)
func lengthy(d time.Duration, max int64, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			bodyError(w, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		// Outside a net/http server (a recorder in a test) there is no
		// connection deadline to move.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + answerGrace))
		h(w, r.WithContext(ctx))
	})
}

// bodyError answers a request whose body could not be read: too large, or
// too slow.
func bodyError(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		apiError(w, http.StatusRequestEntityTooLarge, "the request body is over "+byteSize(tooBig.Limit))
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		apiError(w, http.StatusRequestTimeout, "the request body did not arrive in time")
	default:
		apiError(w, http.StatusBadRequest, "cannot read the request body: "+err.Error())
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
