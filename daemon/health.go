package daemon

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// stale is how long the safety loop may go without finishing a cycle
// before the daemon calls itself unhealthy: three intervals, plus one step
// timeout for a cycle whose driver calls run to their deadline.
func (d *Daemon) stale() time.Duration {
	return 3*d.Interval + d.Runner.StepTimeout
}

// Healthy reports whether the safety loop is alive: it finished a cycle
// within stale (or started less than that ago). A loop that is not is
// guarding nothing, whatever else answers.
func (d *Daemon) Healthy() error {
	d.init()
	d.mu.Lock()
	last, started := d.lastCycle, d.started
	d.mu.Unlock()
	now, limit := d.Clock.Now(), d.stale()
	switch {
	case last.IsZero() && (started.IsZero() || now.Sub(started) <= limit):
		return nil // starting
	case last.IsZero():
		return fmt.Errorf("the safety loop has not finished a cycle in the %s since the daemon started (limit %s)", now.Sub(started).Round(time.Second), limit)
	case now.Sub(last) > limit:
		return fmt.Errorf("the safety loop last finished a cycle %s ago (limit %s)", now.Sub(last).Round(time.Second), limit)
	}
	return nil
}

// healthz answers 200 while the safety loop is alive, 503 otherwise, for
// a liveness probe.
func (d *Daemon) healthz(w http.ResponseWriter, r *http.Request) {
	if err := d.Healthy(); err != nil {
		http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// ready answers 200 once the daemon knows its plans (a sync succeeded, or
// the store kept them from before a restart) and its store answers; the
// body says how stale the plans are. A Git remote that does not answer
// makes the plans stale, not the daemon unready: the safety loop goes on
// guarding the last good ones, and the API goes on showing them.
func (d *Daemon) ready(w http.ResponseWriter, r *http.Request) {
	d.init()
	d.mu.Lock()
	synced, lastSync, known := d.synced, d.lastSync, len(d.desired) > 0 || d.synced
	d.mu.Unlock()
	if !known {
		http.Error(w, "not ready: the plan repository has not been read yet", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := d.Store.History(ctx, "", 1); err != nil {
		http.Error(w, "not ready: the store does not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
	switch {
	case !synced:
		fmt.Fprintln(w, "git: not read yet; following the plans kept from before the restart")
	default:
		age := d.Clock.Since(lastSync).Round(time.Second)
		fmt.Fprintf(w, "git: last read %s ago (poll every %s)", age, d.Poll)
		if age > 3*d.Poll {
			fmt.Fprint(w, "; stale: the plans are the last good ones")
		}
		fmt.Fprintln(w)
	}
}
