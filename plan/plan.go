// Package plan loads, validates and explains MigrationPlan files.
//
// A plan is read from YAML, JSON or CUE, evaluated against the CUE schema in
// package schema, then checked in Go for the rules that relate several fields
// (a target naming an existing phase, traffic never decreasing from one phase
// to the next). Every problem is reported as an Error with the file, line,
// column and field path; loading never stops at the first one.
//
// The package also derives the timeline a plan follows (Timeline, Explain),
// what a change between two versions of a plan will do (Compare), and
// rewrites the fields commits change (ApplyEdits with SetTarget, SetFeature,
// SetAnnotation…) keeping every other byte of the file. It does not talk to
// Git, drivers or Prometheus.
package plan

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// APIVersion and Kind identify a plan document.
const (
	APIVersion = "migrate.hal9.ai/v1"
	Kind       = "MigrationPlan"
)

// Plan is one migration plan file, decoded after validation.
type Plan struct {
	APIVersion string   `json:"apiVersion" yaml:"apiVersion"`
	Kind       string   `json:"kind" yaml:"kind"`
	Metadata   Metadata `json:"metadata" yaml:"metadata"`
	Spec       Spec     `json:"spec" yaml:"spec"`

	// File is the path the plan was loaded from, as given to the loader.
	File string `json:"-" yaml:"-"`

	// positions keeps where the fields that tools edit or point at are in
	// the file; the parsed file itself is not kept, so that a daemon
	// holding thousands of plans holds little more than the plans.
	positions map[string][2]int
}

// keptPositions are the fields whose positions a Plan remembers: its name
// (for errors across files) and its target (which commits rewrite).
var keptPositions = []string{"metadata", "metadata.name", "spec", "spec.target", "spec.target.phase", "spec.target.percentage"}

// Locate returns the line and column of a field of the plan's file, named by
// its path as in errors ("spec.target.percentage"): of its value for a
// scalar, of its key for a mapping or list. Only the name and the target are
// remembered; for another path, or an absent field, Locate returns the
// nearest remembered field enclosing it, or 0, 0.
func (p *Plan) Locate(path string) (line, col int) {
	for path != "" {
		if at, ok := p.positions[path]; ok {
			return at[0], at[1]
		}
		i := strings.LastIndex(path, ".")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0, 0
}

func (p *Plan) namePos() (line, col int) { return p.Locate("metadata.name") }

// Metadata names a plan.
type Metadata struct {
	Name        string            `json:"name" yaml:"name"`
	Labels      map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty" yaml:"annotations,omitempty"`
}

// Spec is the desired migration.
type Spec struct {
	Target     Target           `json:"target" yaml:"target"`
	Driver     Driver           `json:"driver" yaml:"driver"`
	Phases     []Phase          `json:"phases" yaml:"phases"`
	Guardrails []Guardrail      `json:"guardrails,omitempty" yaml:"guardrails,omitempty"`
	Rollback   Rollback         `json:"rollback" yaml:"rollback"`
	Verify     map[string]Check `json:"verify,omitempty" yaml:"verify,omitempty"`
	Features   map[string]int   `json:"features,omitempty" yaml:"features,omitempty"`
	// Sides are the values of `$side` in guardrail queries; by default
	// the driver's names of the two workloads.
	Sides *Sides `json:"sides,omitempty" yaml:"sides,omitempty"`
	// Group names the lockstep group the plan moves in: every member
	// reaches a step before any member goes on, and a breach in one rolls
	// every member back, in one commit. Members line up phase by phase
	// (see Relations).
	Group string `json:"group,omitempty" yaml:"group,omitempty"`
	// After are the gates the migration waits on before it leaves start:
	// other plans that must have reached a position and held it.
	After []Gate `json:"after,omitempty" yaml:"after,omitempty"`
	// Promotion says who moves the target on once the migration holds at
	// it: a person (manual, the default), the daemon with a commit of its
	// own (auto) or the daemon with a branch for a person to merge
	// (pull-request). Either way the next phase's gates must be open.
	Promotion string `json:"promotion,omitempty" yaml:"promotion,omitempty"`
}

// Promotion policies.
const (
	PromotionManual      = "manual"
	PromotionAuto        = "auto"
	PromotionPullRequest = "pull-request"
)

// Promotes reports whether the daemon moves the target on by itself, with
// a commit or a pull request.
func (s Spec) Promotes() bool {
	return s.Promotion == PromotionAuto || s.Promotion == PromotionPullRequest
}

// Gate is a condition on another plan: it has reached Reached (a phase;
// with Percentage, at least that share within it, or any later phase) and
// held it for For.
type Gate struct {
	Plan       string   `json:"plan" yaml:"plan"`
	Reached    string   `json:"reached" yaml:"reached"`
	Percentage *int     `json:"percentage,omitempty" yaml:"percentage,omitempty"`
	For        Duration `json:"for,omitempty" yaml:"for,omitempty"`
}

// Position is the position the gate asks of the other plan: the phase's
// first step when no percentage is given.
func (g Gate) Position() Position {
	pos := Position{Phase: g.Reached}
	if g.Percentage != nil {
		pos.Percentage = *g.Percentage
	}
	return pos
}

// String says what the gate waits for: "checkout-staging at full for 1h".
func (g Gate) String() string {
	s := g.Plan + " at " + g.Reached
	if g.Percentage != nil {
		s += fmt.Sprintf(" %d%%", *g.Percentage)
	}
	if g.For > 0 {
		s += " for " + g.For.String()
	}
	return s
}

// Target is where the migration should be. A nil Percentage means the last
// step of the phase.
type Target struct {
	Phase      string `json:"phase" yaml:"phase"`
	Percentage *int   `json:"percentage,omitempty" yaml:"percentage,omitempty"`
}

// Driver selects and configures the system that applies positions. Exactly
// one field is set.
type Driver struct {
	Kubernetes *KubernetesDriver `json:"kubernetes,omitempty" yaml:"kubernetes,omitempty"`
	Docker     *DockerDriver     `json:"docker,omitempty" yaml:"docker,omitempty"`
}

// Name returns "kubernetes" or "docker".
func (d Driver) Name() string {
	switch {
	case d.Kubernetes != nil:
		return "kubernetes"
	case d.Docker != nil:
		return "docker"
	}
	return ""
}

// Routed reports whether traffic goes through a router (a Gateway API
// route, nginx or HAProxy) rather than following the replica ratio. Only a
// router can mirror, and not every one (see Mirrors).
func (d Driver) Routed() bool {
	switch {
	case d.Kubernetes != nil:
		return d.Kubernetes.Traffic != nil
	case d.Docker != nil:
		return d.Docker.Traffic != nil
	}
	return false
}

// Mirrors reports whether the driver's router can copy requests to the
// candidate: every router but HAProxy, which has no way to.
func (d Driver) Mirrors() bool {
	// Routed without Kubernetes has a Docker traffic block.
	return d.Routed() && (d.Kubernetes != nil || d.Docker.Traffic.HAProxy == nil)
}

// KubernetesDriver drives two Deployments, optionally through a Gateway API
// route.
type KubernetesDriver struct {
	// Cluster names the API server the Deployments are on: one of the
	// daemon's kubernetes.clusters. Empty: the daemon's default
	// (kubernetes.kubeconfig, or the cluster it runs in).
	Cluster   string             `json:"cluster,omitempty" yaml:"cluster,omitempty"`
	Namespace string             `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Stable    KubernetesWorkload `json:"stable" yaml:"stable"`
	Candidate KubernetesWorkload `json:"candidate" yaml:"candidate"`
	Traffic   *KubernetesTraffic `json:"traffic,omitempty" yaml:"traffic,omitempty"`
}

// KubernetesWorkload names a Deployment.
type KubernetesWorkload struct {
	Deployment string `json:"deployment" yaml:"deployment"`
}

// KubernetesTraffic names the Gateway API route whose weights carry the
// split: an HTTPRoute or a GRPCRoute, exactly one. Without it traffic
// follows the replica ratio.
type KubernetesTraffic struct {
	HTTPRoute string `json:"httpRoute,omitempty" yaml:"httpRoute,omitempty"`
	GRPCRoute string `json:"grpcRoute,omitempty" yaml:"grpcRoute,omitempty"`
}

// Kind is the field that names the route: "httpRoute" or "grpcRoute"; ""
// when neither does.
func (t KubernetesTraffic) Kind() string {
	switch {
	case t.HTTPRoute != "":
		return "httpRoute"
	case t.GRPCRoute != "":
		return "grpcRoute"
	}
	return ""
}

// Route is the name of the route, of whichever kind.
func (t KubernetesTraffic) Route() string {
	if t.HTTPRoute != "" {
		return t.HTTPRoute
	}
	return t.GRPCRoute
}

// DockerDriver drives containers on a Docker engine.
type DockerDriver struct {
	Stable    DockerWorkload `json:"stable" yaml:"stable"`
	Candidate DockerWorkload `json:"candidate" yaml:"candidate"`
	Traffic   *DockerTraffic `json:"traffic,omitempty" yaml:"traffic,omitempty"`
}

// DockerWorkload names a Compose service or a container name prefix.
type DockerWorkload struct {
	Service   string `json:"service,omitempty" yaml:"service,omitempty"`
	Container string `json:"container,omitempty" yaml:"container,omitempty"`
}

// DockerTraffic routes traffic through an nginx upstream or an HAProxy
// backend; exactly one field is set. Without it traffic follows the replica
// ratio.
type DockerTraffic struct {
	Nginx   *NginxRouter   `json:"nginx,omitempty" yaml:"nginx,omitempty"`
	HAProxy *HAProxyRouter `json:"haproxy,omitempty" yaml:"haproxy,omitempty"`
}

// Kind names the router that is set: "nginx" or "haproxy"; "" for none.
func (t DockerTraffic) Kind() string {
	switch {
	case t.Nginx != nil:
		return "nginx"
	case t.HAProxy != nil:
		return "haproxy"
	}
	return ""
}

// NginxRouter is the nginx container and upstream that carry the split.
type NginxRouter struct {
	Container string `json:"container,omitempty" yaml:"container,omitempty"`
	Upstream  string `json:"upstream" yaml:"upstream"`
}

// HAProxyRouter is the HAProxy backend whose server weights carry the split.
// Where HAProxy's runtime API listens is the daemon's to say, not the plan's.
type HAProxyRouter struct {
	Backend string `json:"backend" yaml:"backend"`
}

// Phase is one stage of the migration. Exactly one of Steps, Mirror and Run
// is set.
type Phase struct {
	Name         string        `json:"name" yaml:"name"`
	Steps        []int         `json:"steps,omitempty" yaml:"steps,omitempty"`
	Mirror       int           `json:"mirror,omitempty" yaml:"mirror,omitempty"`
	Run          *Run          `json:"run,omitempty" yaml:"run,omitempty"`
	Soak         Duration      `json:"soak,omitempty" yaml:"soak,omitempty"`
	Checkpoint   string        `json:"checkpoint,omitempty" yaml:"checkpoint,omitempty"`
	Verify       []string      `json:"verify,omitempty" yaml:"verify,omitempty"`
	Irreversible bool          `json:"irreversible,omitempty" yaml:"irreversible,omitempty"`
	Decommission *Decommission `json:"decommission,omitempty" yaml:"decommission,omitempty"`
	// After are gates the migration waits on before it enters this
	// phase.
	After []Gate `json:"after,omitempty" yaml:"after,omitempty"`
}

// Kind reports which of steps, mirror or run the phase declares.
func (p Phase) Kind() PhaseKind {
	switch {
	case p.Run != nil:
		return PhaseRun
	case p.Mirror > 0:
		return PhaseMirror
	}
	return PhaseSteps
}

// PhaseKind says how a phase moves traffic.
type PhaseKind string

// The kinds of phase.
const (
	PhaseSteps  PhaseKind = "steps"
	PhaseMirror PhaseKind = "mirror"
	PhaseRun    PhaseKind = "run"
)

// Run is a one-off job: a container image and its command.
type Run struct {
	Image   string            `json:"image" yaml:"image"`
	Command []string          `json:"command,omitempty" yaml:"command,omitempty"`
	Args    []string          `json:"args,omitempty" yaml:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty" yaml:"env,omitempty"`
	Timeout Duration          `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// ServiceAccountName is the Kubernetes ServiceAccount the job's pod
	// runs as, with its token mounted; empty: the namespace's default one,
	// without a token. Only the kubernetes driver runs jobs so.
	ServiceAccountName string `json:"serviceAccountName,omitempty" yaml:"serviceAccountName,omitempty"`
}

// Decommission scales stable to zero once the phase has held for After.
type Decommission struct {
	After Duration `json:"after" yaml:"after"`
}

// Guardrail is a condition that must hold while candidate takes traffic.
type Guardrail struct {
	Name         string `json:"name" yaml:"name"`
	MetricSource `json:",inline" yaml:",inline"`
	Max          *float64 `json:"max,omitempty" yaml:"max,omitempty"`
	Min          *float64 `json:"min,omitempty" yaml:"min,omitempty"`
	For          Duration `json:"for,omitempty" yaml:"for,omitempty"`
	Failures     int      `json:"failures,omitempty" yaml:"failures,omitempty"`
	Interval     Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	// Settle is how long after every move the guardrail is not judged:
	// a query's own range selector (rate(x[1m])) reaches back across the
	// move for that long, and readings taken meanwhile would judge the
	// position left as much as the one entered.
	Settle Duration `json:"settle,omitempty" yaml:"settle,omitempty"`
	// Compare judges the candidate against stable instead of against Max
	// and Min: the source is measured once for each side.
	Compare *Comparison `json:"compare,omitempty" yaml:"compare,omitempty"`
}

// MetricSource is what a guardrail or a check measures: one of its fields
// is set, and that field's name in the plan is the source's kind. A new
// kind of source is one field here, its block in the schema, and its
// provider in package guardrails.
type MetricSource struct {
	Prometheus *Prometheus `json:"prometheus,omitempty" yaml:"prometheus,omitempty"`
	HTTP       *HTTPCheck  `json:"http,omitempty" yaml:"http,omitempty"`
	Resources  *Resources  `json:"resources,omitempty" yaml:"resources,omitempty"`
}

// Kind names the source set as the plan does: "prometheus", "http"; empty
// when none is.
func (s MetricSource) Kind() string {
	kind, _ := s.Block()
	return kind
}

// Block returns the source set and its kind, or "" and nil when none is.
// The kind is the field's JSON name, so that the plan, the schema and the
// providers all name a source the same way.
func (s MetricSource) Block() (kind string, block any) {
	v := reflect.ValueOf(s)
	for i := range v.NumField() {
		if f := v.Field(i); !f.IsNil() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			return name, f.Interface()
		}
	}
	return "", nil
}

// Prometheus is a PromQL query.
type Prometheus struct {
	Query string `json:"query" yaml:"query"`
}

// HTTPCheck is an HTTP endpoint expected to answer with a success status.
type HTTPCheck struct {
	URL          string   `json:"url" yaml:"url"`
	Method       string   `json:"method,omitempty" yaml:"method,omitempty"`
	ExpectStatus int      `json:"expectStatus,omitempty" yaml:"expectStatus,omitempty"`
	Timeout      Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
}

// Rollback says what happens on a breach.
type Rollback struct {
	Automatic *bool  `json:"automatic,omitempty" yaml:"automatic,omitempty"`
	To        string `json:"to,omitempty" yaml:"to,omitempty"`
	OnNoData  string `json:"onNoData,omitempty" yaml:"onNoData,omitempty"`
}

// ForceRollbackAnnotation is the annotation that `hal9-migrate rollback
// --force` sets, to the position it moves the target back to (as
// Position.String writes it), when that move goes back past a point of no
// return: it records that the move is deliberate, and the daemon allows it
// only while the target is that position.
const ForceRollbackAnnotation = "migrate.hal9.ai/force-rollback"

// RestoreCheckpointAnnotation is the annotation that `hal9-migrate state
// restore` sets, to the name of a checkpoint, together with spec.target at
// the checkpoint's position: moving back there, the daemon also restores
// the checkpoint's snapshot through the driver. It acts only while the
// target is the checkpoint's position, and once per snapshot: left in the
// plan, it restores nothing on a later move back there unless the
// checkpoint was taken again since.
const RestoreCheckpointAnnotation = "migrate.hal9.ai/restore-checkpoint"

// Rollback targets and no-data policies with special meaning.
const (
	RollbackPreviousStep = "previous-step"
	RollbackStart        = "start"

	OnNoDataHold     = "hold"
	OnNoDataRollback = "rollback"
	OnNoDataIgnore   = "ignore"
)

// IsAutomatic reports whether a breach rolls back on its own (the default).
func (r Rollback) IsAutomatic() bool { return r.Automatic == nil || *r.Automatic }

// Target returns the configured rollback target, previous-step by default.
func (r Rollback) Target() string {
	if r.To == "" {
		return RollbackPreviousStep
	}
	return r.To
}

// NoData returns the configured no-data policy, hold by default.
func (r Rollback) NoData() string {
	if r.OnNoData == "" {
		return OnNoDataHold
	}
	return r.OnNoData
}

// Check is a named verification run by phases and by `hal9-migrate verify`.
type Check struct {
	Run          *Run `json:"run,omitempty" yaml:"run,omitempty"`
	MetricSource `json:",inline" yaml:",inline"`
	Max          *float64 `json:"max,omitempty" yaml:"max,omitempty"`
	Min          *float64 `json:"min,omitempty" yaml:"min,omitempty"`
}

// Duration is a time.Duration written in Go syntax ("90s", "24h").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d compactly: "24h", "1h30m", "90s" rather than "24h0m0s".
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// MarshalJSON writes d in Go syntax.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads d from Go syntax.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string: %w", err)
	}
	return d.parse(s)
}

// MarshalYAML writes d in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads d from Go syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return d.parse(n.Value) }

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// FormatDuration formats d without zero units: 24h, 1h30m, 90s, 1d is 24h.
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	s := d.String()
	// Drop trailing zero units that time.Duration.String keeps ("24h0m0s").
	for _, suffix := range []string{"0s", "0m"} {
		if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix && (s[len(s)-len(suffix)-1] < '0' || s[len(s)-len(suffix)-1] > '9') {
			s = s[:len(s)-len(suffix)]
		}
	}
	return s
}
