package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers"
)

const (
	roleStable    = "stable"
	roleCandidate = "candidate"
)

// selector picks a workload's containers: by Compose service, or by
// container name prefix.
type selector struct {
	role    string
	service string
	prefix  string
}

func (s selector) withRole(r string) selector { s.role = r; return s }
func (s selector) empty() bool                { return s.service == "" && s.prefix == "" }

func (s selector) String() string {
	if s.service != "" {
		return "service " + s.service
	}
	return "containers " + s.prefix + "*"
}

// member is one container of a workload, as inspected.
type member struct {
	id      string
	name    string
	labels  map[string]string
	running bool
	ready   bool
	// state is the engine's state (running, exited, created...), health
	// the health check's status ("" without one).
	state  string
	health string
	image  string
	clone  bool
	// created orders members: the oldest is the user's own.
	created time.Time
	info    container.InspectResponse
}

// workload is one side's containers: members take part, templates are
// created copies the driver keeps to clone from after a decommission.
type workload struct {
	sel       selector
	members   []member
	templates []member
}

func (w *workload) running() []member {
	var r []member
	for _, m := range w.members {
		if m.running {
			r = append(r, m)
		}
	}
	return r
}

func (w *workload) ready() int {
	n := 0
	for _, m := range w.members {
		if m.ready {
			n++
		}
	}
	return n
}

// labelledReplicas is the LabelReplicas value of the workload's containers,
// 0 when none carries a valid one.
func (w *workload) labelledReplicas() int {
	for _, m := range slices.Concat(w.members, w.templates) {
		if n, err := strconv.Atoi(m.labels[LabelReplicas]); err == nil && n > 0 {
			return n
		}
	}
	return 0
}

// source returns the container to clone: a running member, else a stopped
// one, else a template; the oldest of them, most likely the user's own.
func (w *workload) source() (member, bool) {
	for _, pool := range [][]member{w.running(), w.members, w.templates} {
		if len(pool) > 0 {
			return slices.MinFunc(pool, func(a, b member) int { return a.created.Compare(b.created) }), true
		}
	}
	return member{}, false
}

// workloads is everything a call looks at.
type workloads struct {
	stable, cand *workload
	router       *member
}

func (ws *workloads) state() drivers.State {
	return drivers.State{
		StableReplicas:    len(ws.stable.running()),
		StableReady:       ws.stable.ready(),
		CandidateReplicas: len(ws.cand.running()),
		CandidateReady:    ws.cand.ready(),
		Decommissioned:    len(ws.stable.members) == 0,
	}
}

func (ws *workloads) labelledTotal() int {
	return max(ws.stable.labelledReplicas(), ws.cand.labelledReplicas())
}

// load lists and inspects both workloads and the router.
func (d *Driver) load(ctx context.Context) (*workloads, error) {
	ws := &workloads{stable: &workload{sel: d.stable}, cand: &workload{sel: d.cand}}
	seen := map[string]bool{}
	for _, w := range []*workload{ws.stable, ws.cand} {
		if err := d.loadWorkload(ctx, w, seen); err != nil {
			return nil, err
		}
	}
	if d.routerContainer != "" {
		r, err := d.findRouter(ctx)
		if err != nil {
			return nil, err
		}
		ws.router = r
	}
	return ws, nil
}

// loadWorkload lists and inspects w's containers, oldest first, leaving
// out the ones in seen and adding its own to it.
func (d *Driver) loadWorkload(ctx context.Context, w *workload, seen map[string]bool) error {
	summaries, err := d.list(ctx, w.sel)
	if err != nil {
		return err
	}
	projects := map[string]bool{}
	for _, s := range summaries {
		name := containerName(s.Names)
		if seen[s.ID] || !d.belongs(w.sel, name, s.Labels) {
			continue
		}
		if d.routerContainer != "" && name == d.routerContainer {
			continue
		}
		seen[s.ID] = true
		m, err := d.inspect(ctx, s.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return err
		}
		if m.labels[LabelRole] == RoleTemplate {
			w.templates = append(w.templates, m)
			continue
		}
		if w.sel.service != "" {
			projects[m.labels[composeProject]] = true
		}
		w.members = append(w.members, m)
	}
	if len(projects) > 1 {
		return fmt.Errorf("%s %s is in the Compose projects %s: name one with the daemon's Compose project option, or select containers by name",
			w.sel.role, w.sel, strings.Join(sortedKeys(projects), ", "))
	}
	slices.SortFunc(w.members, func(a, b member) int {
		return cmp.Or(a.created.Compare(b.created), strings.Compare(a.name, b.name))
	})
	return nil
}

// list returns the containers, in any state, that may belong to sel.
func (d *Driver) list(ctx context.Context, sel selector) ([]container.Summary, error) {
	f := client.Filters{}
	if sel.service != "" {
		f = f.Add("label", composeService+"="+sel.service)
		if d.opts.ComposeProject != "" {
			f = f.Add("label", composeProject+"="+d.opts.ComposeProject)
		}
	} else {
		f = f.Add("name", namePrefixFilter(sel.prefix))
	}
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list the containers of %s %s: %w", sel.role, sel, err)
	}
	return res.Items, nil
}

// belongs reports whether a container named name with labels is part of the
// workload sel selects: not a job, and for a name prefix not a container
// whose name the other workload's longer prefix claims.
func (d *Driver) belongs(sel selector, name string, labels map[string]string) bool {
	if labels[LabelRole] == RoleJob || labels[LabelJob] != "" {
		return false
	}
	if sel.service != "" {
		return labels[composeService] == sel.service && (d.opts.ComposeProject == "" || labels[composeProject] == d.opts.ComposeProject)
	}
	if !strings.HasPrefix(name, sel.prefix) {
		return false
	}
	other := d.cand
	if sel.role == roleCandidate {
		other = d.stable
	}
	if other.prefix != "" && len(other.prefix) > len(sel.prefix) && strings.HasPrefix(name, other.prefix) {
		return false
	}
	return true
}

// namePrefixFilter is the engine's name filter, a regular expression
// matched against "/NAME", for names starting with prefix.
func namePrefixFilter(prefix string) string { return "^/" + regexp.QuoteMeta(prefix) }

func containerName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	// Names lists links too ("/web/db"); the container's own name has a
	// single leading slash.
	for _, n := range names {
		if strings.Count(n, "/") == 1 {
			return strings.TrimPrefix(n, "/")
		}
	}
	return strings.TrimPrefix(names[0], "/")
}

func (d *Driver) inspect(ctx context.Context, id string) (member, error) {
	res, err := d.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return member{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return newMember(res.Container), nil
}

func newMember(info container.InspectResponse) member {
	m := member{id: info.ID, name: strings.TrimPrefix(info.Name, "/"), info: info}
	if info.Config != nil {
		m.labels = info.Config.Labels
		m.image = info.Config.Image
	}
	m.created, _ = time.Parse(time.RFC3339Nano, info.Created)
	m.clone = m.labels[LabelRole] == RoleClone
	if s := info.State; s != nil {
		m.state = string(s.Status)
		m.running = s.Running
		if s.Health != nil {
			m.health = string(s.Health.Status)
		}
		m.ready = s.Running && !s.Paused && !s.Restarting && (m.health == "" || m.health == string(container.Healthy))
	}
	return m
}

// findRouter finds the router's container: by name, else as the one
// container of a Compose service of that name.
func (d *Driver) findRouter(ctx context.Context) (*member, error) {
	name := d.routerContainer
	res, err := d.cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if err == nil {
		m := newMember(res.Container)
		return &m, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("inspect the router container %s: %w", name, err)
	}
	f := client.Filters{}.Add("label", composeService+"="+name)
	if d.opts.ComposeProject != "" {
		f = f.Add("label", composeProject+"="+d.opts.ComposeProject)
	}
	list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("find the router container %s: %w", name, err)
	}
	switch len(list.Items) {
	case 0:
		return nil, nil
	case 1:
		m, err := d.inspect(ctx, list.Items[0].ID)
		if err != nil {
			return nil, err
		}
		return &m, nil
	}
	return nil, fmt.Errorf("router: %d containers of the Compose service %s; the driver signals one", len(list.Items), name)
}

// scaleUp brings w to at least n running containers: stopped members start
// first, then clones are made; all start at once, as starting is what takes
// the engine time. A template left by a decommission is removed once a
// member runs again.
func (d *Driver) scaleUp(ctx context.Context, w *workload, n int) error {
	run := len(w.running())
	type pending struct{ id, name string }
	var start []pending
	for _, m := range w.members {
		if run >= n {
			break
		}
		if !m.running {
			start = append(start, pending{m.id, m.name})
			run++
		}
	}
	for run < n {
		id, name, err := d.clone(ctx, w, RoleClone)
		if err != nil {
			return err
		}
		start = append(start, pending{id, name})
		run++
	}
	errs := make([]error, len(start))
	var wg sync.WaitGroup
	for i, p := range start {
		wg.Go(func() {
			if _, err := d.cli.ContainerStart(ctx, p.id, client.ContainerStartOptions{}); err != nil {
				errs[i] = fmt.Errorf("start %s container %s: %w", w.sel.role, p.name, err)
				return
			}
			d.opts.Log.Info("started a container", "plan", d.plan, "workload", w.sel.role, "container", p.name)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if run > 0 {
		for _, t := range w.templates {
			if err := d.remove(ctx, t); err != nil {
				return err
			}
		}
		w.templates = nil
	}
	return nil
}

// scaleDown brings w to at most n running containers, removing the ones the
// driver cloned first, newest first. The last container of the workload is
// stopped, not removed, so that there is one to clone from.
func (d *Driver) scaleDown(ctx context.Context, w *workload, n int) error {
	run := w.running()
	if len(run) <= n {
		return nil
	}
	slices.SortStableFunc(run, func(a, b member) int {
		if a.clone != b.clone {
			if a.clone {
				return -1
			}
			return 1
		}
		return b.created.Compare(a.created)
	})
	victims := run[:len(run)-n]
	// Going would leave the workload no container at all: the last, its
	// oldest, stops instead.
	keepLast := len(victims) == len(w.members)
	return d.each(victims, func(i int, m member) error {
		if keepLast && i == len(victims)-1 {
			if err := d.stop(ctx, m); err != nil {
				return err
			}
			d.opts.Log.Info("stopped the last container", "plan", d.plan, "workload", w.sel.role, "container", m.name)
			return nil
		}
		return d.remove(ctx, m)
	})
}

// each calls f for every member at once, and joins the errors: the engine
// takes a while to stop or start each container.
func (d *Driver) each(ms []member, f func(int, member) error) error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = f(i, m) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// decommission removes all of stable's containers, after keeping a created
// copy to come back from.
func (d *Driver) decommission(ctx context.Context, w *workload) error {
	if len(w.members) == 0 {
		return nil
	}
	if len(w.templates) == 0 {
		if _, _, err := d.clone(ctx, w, RoleTemplate); err != nil {
			return err
		}
	}
	if err := d.each(w.members, func(_ int, m member) error { return d.remove(ctx, m) }); err != nil {
		return err
	}
	d.opts.Log.Info("decommissioned", "plan", d.plan, "workload", w.sel.role, "containers", len(w.members))
	return nil
}

func (d *Driver) stop(ctx context.Context, m member) error {
	secs := int(d.opts.StopTimeout.Seconds())
	if _, err := d.cli.ContainerStop(ctx, m.id, client.ContainerStopOptions{Timeout: &secs}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", m.name, err)
	}
	return nil
}

// remove stops m gracefully, then removes it with its anonymous volumes.
func (d *Driver) remove(ctx context.Context, m member) error {
	if m.running {
		if err := d.stop(ctx, m); err != nil {
			return err
		}
	}
	if _, err := d.cli.ContainerRemove(ctx, m.id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", m.name, err)
	}
	d.opts.Log.Info("removed a container", "plan", d.plan, "container", m.name)
	return nil
}

// Container is one container of a plan's workloads, as Describe reports it.
type Container struct {
	// Workload is "stable" or "candidate".
	Workload string `json:"workload"`
	Name     string `json:"name"`
	ID       string `json:"id"`
	// Image is the image as the container names it; ImageID what it runs.
	Image   string `json:"image"`
	ImageID string `json:"imageID"`
	// State is the engine's (running, exited, created...); Health the
	// health check's (healthy, unhealthy, starting), empty without one.
	State  string `json:"state"`
	Health string `json:"health,omitempty"`
	Ready  bool   `json:"ready"`
	// Role is RoleClone for a container the driver made, RoleTemplate for
	// the copy a decommission keeps, empty for the user's own.
	Role string `json:"role,omitempty"`
}

// Describe lists the containers of both workloads, stable's first, oldest
// first: what Observe counts, with their images and health, for status
// pages and pre-checks.
func (d *Driver) Describe(ctx context.Context) ([]Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("describe %s: %w", d.plan, err)
	}
	ws, err := d.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", d.plan, err)
	}
	var out []Container
	for _, w := range []*workload{ws.stable, ws.cand} {
		for _, m := range slices.Concat(w.members, w.templates) {
			out = append(out, Container{
				Workload: w.sel.role, Name: m.name, ID: m.id, Image: m.image, ImageID: m.info.Image,
				State: m.state, Health: m.health, Ready: m.ready, Role: m.labels[LabelRole],
			})
		}
	}
	return out, nil
}
