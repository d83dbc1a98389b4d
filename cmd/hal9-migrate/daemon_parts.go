package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/hal9ai/hal9-migrate/daemon"
	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/docker"
	"github.com/hal9ai/hal9-migrate/guardrails"
	"github.com/hal9ai/hal9-migrate/plan"
	"github.com/hal9ai/hal9-migrate/reconcile"
)

// daemonParts are the parts of the daemon its configuration chooses: the
// drivers, the guardrail providers, and how it runs (alone, or as one of
// several replicas electing a leader).
type daemonParts struct {
	open   drivers.Opener
	guards reconcile.Guardrails
	checks reconcile.Checker
	prober daemon.Prober
	// run runs the daemon's loop: at once, or while this replica leads.
	run     func(ctx context.Context, loop func(context.Context) error) error
	closers []func() error
}

func (p *daemonParts) close() {
	for _, c := range p.closers {
		_ = c()
	}
}

// openParts builds the parts. A driver is opened lazily, when a plan needs
// it: a daemon with only Docker plans needs no Kubernetes, and the other
// way round; a plan naming a driver that cannot be reached is an error in
// that plan's status, never a fallback.
func openParts(ctx context.Context, cfg daemon.Config, log *slog.Logger) (*daemonParts, error) {
	parts := &daemonParts{run: func(ctx context.Context, loop func(context.Context) error) error { return loop(ctx) }}

	flags := cfg.Docker.FlagsPath
	if flags == "" {
		flags = filepath.Join(cfg.DataDir, "flags", "{plan}.flagd.json")
	}
	engine, err := docker.New(docker.Options{
		Host: cfg.Docker.Host, ComposeProject: cfg.Docker.ComposeProject, Replicas: cfg.Docker.Replicas,
		FlagsPath: flags, NginxDir: cfg.Docker.NginxDir, NginxRouterDir: cfg.Docker.NginxRouterDir,
		NginxTest: cfg.Docker.NginxTest, NginxReload: cfg.Docker.NginxReload, Log: log.With("driver", "docker"),
	})
	if err != nil {
		return nil, err
	}
	parts.closers = append(parts.closers, engine.Close)
	openers := map[string]drivers.Opener{"docker": engine.Open}
	parts.open = drivers.Select(openers)

	var prom guardrails.Provider
	var promClient *guardrails.Prometheus
	if cfg.Prometheus.URL != "" {
		promClient, err = guardrails.NewPrometheus(cfg.Prometheus)
		if err != nil {
			parts.close()
			return nil, fmt.Errorf("prometheus: %w", err)
		}
		prom = promClient
	}
	httpProvider := guardrails.NewHTTP(&http.Client{Timeout: 30 * time.Second})
	parts.guards = guardrails.NewEvaluator(prom, httpProvider)
	parts.checks = guardrails.NewChecker(prom, httpProvider)
	parts.prober = &prober{prom: promClient, http: httpProvider}
	return parts, nil
}

// prober lets pre-check measure sources once.
type prober struct {
	prom *guardrails.Prometheus // nil: none configured
	http *guardrails.HTTP
}

func (p *prober) Probe(ctx context.Context, prom *plan.Prometheus, h *plan.HTTPCheck) (float64, error) {
	var m guardrails.Measurement
	src := guardrails.Source{Prometheus: prom, HTTP: h}
	switch {
	case prom != nil && p.prom == nil:
		return 0, errors.New("no Prometheus is configured")
	case prom != nil:
		m = p.prom.Measure(ctx, src, time.Now())
	default:
		m = p.http.Measure(ctx, src, time.Now())
	}
	if m.Err != nil {
		return m.Value, m.Err
	}
	if m.Failed {
		return m.Value, fmt.Errorf("the check failed: %s", m.Detail)
	}
	return m.Value, nil
}

func (p *prober) Reachable(ctx context.Context) (bool, error) {
	if p.prom == nil {
		return false, nil
	}
	if _, err := p.prom.Query(ctx, "vector(1)", time.Now()); err != nil {
		return true, fmt.Errorf("prometheus at %s: %w", p.prom.URL(), err)
	}
	return true, nil
}
