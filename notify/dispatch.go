package notify

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatcher's counters, by target and event.
type Metrics struct {
	sent, failed, dropped, retried *prometheus.CounterVec
}

// NewMetrics creates the counters and registers them on reg (nil: not
// registered, as in tests). Like prometheus.MustRegister, it panics on a
// name registered twice.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	c := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"target", "event"})
	}
	m := &Metrics{
		sent:    c("hal9_notifications_sent_total", "Notifications a target's receiver accepted."),
		failed:  c("hal9_notifications_failed_total", "Notifications given up on after their retries, or refused by the receiver."),
		dropped: c("hal9_notifications_dropped_total", "Notifications dropped because the target's queue was full: its receiver is slow or down."),
		retried: c("hal9_notifications_retries_total", "Sends tried again after a failure."),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.failed, m.dropped, m.retried)
	}
	return m
}

// Dispatcher hands events to the targets that want them. Notify never
// blocks; each target sends from its own queue in its own goroutine.
type Dispatcher struct {
	targets []*target
	metrics *Metrics
	log     *slog.Logger
	wg      sync.WaitGroup
	stop    context.CancelFunc
}

// target is one configured receiver and its queue.
type target struct {
	cfg       TargetConfig
	kind      string
	sender    Sender
	templates templates
	queue     chan Event
	timeout   time.Duration
	retries   int
	// backoff is the wait before the first retry; it doubles each time.
	backoff time.Duration
}

// Options are what a Dispatcher is made with besides its configuration.
type Options struct {
	// Metrics counts sends; nil: NewMetrics(nil).
	Metrics *Metrics
	Log     *slog.Logger
	// Client sends the requests; nil: a client of its own. Each send has
	// its target's deadline.
	Client *http.Client
	// Backoff is the wait before the first retry (default 500ms),
	// doubling each time up to 30s, with jitter.
	Backoff time.Duration
}

// New checks cfg, reads the targets' secrets, and starts a goroutine per
// target; Close stops them. An empty configuration makes a Dispatcher
// with no target, whose Notify does nothing.
func New(cfg Config, o Options) (*Dispatcher, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	d := &Dispatcher{metrics: o.Metrics, log: o.Log}
	if d.metrics == nil {
		d.metrics = NewMetrics(nil)
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	client := o.Client
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	backoff := o.Backoff
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	for i := range cfg.Targets {
		tc := cfg.Targets[i]
		k, _ := kindOf(&tc)
		s, err := k.Open(&tc, client)
		if err != nil {
			return nil, err
		}
		tpl, _ := parseTemplates(tc.Templates)
		t := &target{cfg: tc, kind: k.Name, sender: s, templates: tpl, timeout: tc.Timeout,
			retries: DefaultRetries, backoff: backoff}
		if tc.Retries != nil {
			t.retries = *tc.Retries
		}
		if t.timeout == 0 {
			t.timeout = DefaultTimeout
		}
		q := tc.Queue
		if q == 0 {
			q = DefaultQueue
		}
		t.queue = make(chan Event, q)
		d.targets = append(d.targets, t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	for _, t := range d.targets {
		d.wg.Go(func() { d.run(ctx, t) })
	}
	return d, nil
}

// Notify hands e to every target that wants it, without blocking: a
// target whose queue is full drops it, counted in
// hal9_notifications_dropped_total. It fills in e's ID and time if unset.
func (d *Dispatcher) Notify(e Event) {
	if d == nil {
		return
	}
	if e.ID == "" {
		e.ID = newID()
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	for _, t := range d.targets {
		if !t.cfg.wants(e) {
			continue
		}
		select {
		case t.queue <- e:
		default:
			d.metrics.dropped.WithLabelValues(t.cfg.Name, string(e.Kind)).Inc()
			d.log.Warn("notification dropped: the target's queue is full", "target", t.cfg.Name, "event", e.Kind, "plan", e.Plan)
		}
	}
}

// Close stops sending, abandoning what is queued and cutting sends short,
// and waits for the targets' goroutines to end.
func (d *Dispatcher) Close() {
	if d == nil {
		return
	}
	d.stop()
	d.wg.Wait()
}

// run sends a target's events one at a time until ctx ends.
func (d *Dispatcher) run(ctx context.Context, t *target) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-t.queue:
			d.send(ctx, t, e)
		}
	}
}

// send delivers one event with its retries, each try under the target's
// timeout.
func (d *Dispatcher) send(ctx context.Context, t *target, e Event) {
	m := t.templates.render(e)
	wait := t.backoff
	var err error
	for try := 0; ; try++ {
		sctx, cancel := context.WithTimeout(ctx, t.timeout)
		err = t.sender.Send(sctx, m)
		cancel()
		if err == nil {
			d.metrics.sent.WithLabelValues(t.cfg.Name, string(e.Kind)).Inc()
			return
		}
		var perm Permanent
		if errors.As(err, &perm) || try >= t.retries || ctx.Err() != nil {
			break
		}
		d.metrics.retried.WithLabelValues(t.cfg.Name, string(e.Kind)).Inc()
		jitter := time.Duration(rand.Int64N(int64(wait)/4 + 1))
		select {
		case <-ctx.Done():
		case <-time.After(wait + jitter):
		}
		wait = min(2*wait, 30*time.Second)
	}
	d.metrics.failed.WithLabelValues(t.cfg.Name, string(e.Kind)).Inc()
	// The error names the target's kind and status, never its URL, which
	// may hold a secret.
	d.log.Error("notification failed", "target", t.cfg.Name, "kind", t.kind, "event", e.Kind, "plan", e.Plan, "err", err)
}

func newID() string {
	var b [16]byte
	_, _ = cryptorand(b[:])
	return hex.EncodeToString(b[:])
}

var cryptorand = crand.Read
