package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

// exitKilled is the exit code of a container killed with SIGKILL.
const exitKilled = 137

// StartJob creates and starts a container running run, labelled with id and
// the plan, on the candidate's network (else stable's) so that it reaches
// what they reach. A job with that id that exists already, in any state, is
// left alone: it is started only if it was created and never started. The
// image is pulled when the engine does not have it.
func (d *Driver) StartJob(ctx context.Context, id string, run plan.Run) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start job %s of %s: %w", id, d.plan, err)
	}
	if err := d.startJob(ctx, id, run); err != nil {
		return fmt.Errorf("start job %s of %s: %w", id, d.plan, err)
	}
	return nil
}

func (d *Driver) startJob(ctx context.Context, id string, run plan.Run) error {
	if run.Image == "" {
		return fmt.Errorf("no image to run")
	}
	existing, err := d.findJob(ctx, id)
	if err != nil {
		return err
	}
	if existing != nil {
		if existing.State == container.StateCreated {
			return d.startJobContainer(ctx, existing.ID)
		}
		return nil
	}
	labels := map[string]string{}
	for k, v := range d.opts.Labels {
		labels[k] = v
	}
	labels[LabelPlan], labels[LabelRole], labels[LabelJob] = d.plan, RoleJob, id
	if run.Timeout > 0 {
		labels[LabelTimeout] = run.Timeout.Std().String()
	}
	cfg := &container.Config{Image: run.Image, Labels: labels, Entrypoint: run.Command, Cmd: run.Args}
	for _, k := range sortedKeys(run.Env) {
		cfg.Env = append(cfg.Env, k+"="+run.Env[k])
	}
	hc := &container.HostConfig{}
	if mode := d.jobNetwork(ctx); mode != "" {
		hc.NetworkMode = container.NetworkMode(mode)
	}
	opts := client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: jobName(d.plan, id)}
	res, err := d.cli.ContainerCreate(ctx, opts)
	if cerrdefs.IsNotFound(err) {
		if perr := d.pull(ctx, run.Image); perr != nil {
			return fmt.Errorf("create the job's container: %w; pull: %w", err, perr)
		}
		res, err = d.cli.ContainerCreate(ctx, opts)
	}
	if cerrdefs.IsConflict(err) {
		return nil // started meanwhile under the same id
	}
	if err != nil {
		return fmt.Errorf("create the job's container: %w", err)
	}
	d.opts.Log.Info("job created", "plan", d.plan, "job", id, "image", run.Image)
	return d.startJobContainer(ctx, res.ID)
}

func (d *Driver) startJobContainer(ctx context.Context, cid string) error {
	if _, err := d.cli.ContainerStart(ctx, cid, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("start the job's container: %w", err)
	}
	return nil
}

// jobNetwork is the network the candidate, else stable, runs on, if it is
// one the user made.
func (d *Driver) jobNetwork(ctx context.Context) string {
	ws, err := d.load(ctx)
	if err != nil {
		return ""
	}
	for _, w := range []*workload{ws.cand, ws.stable} {
		if m, ok := w.source(); ok && m.info.HostConfig != nil && m.info.HostConfig.NetworkMode.IsUserDefined() {
			return string(m.info.HostConfig.NetworkMode)
		}
	}
	return ""
}

func (d *Driver) pull(ctx context.Context, image string) error {
	resp, err := d.cli.ImagePull(ctx, image, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer resp.Close()
	return resp.Wait(ctx)
}

// JobStatus reports the job's container: running, or done with its exit
// code. A job still running past its timeout is killed and reported done
// and failed; so is one that exited with SIGKILL's code after running at
// least its timeout (killed by an earlier call). Logs is the tail of its
// output.
func (d *Driver) JobStatus(ctx context.Context, id string) (drivers.JobStatus, error) {
	if err := ctx.Err(); err != nil {
		return drivers.JobStatus{}, fmt.Errorf("status of job %s of %s: %w", id, d.plan, err)
	}
	st, err := d.jobStatus(ctx, id)
	if err != nil {
		return drivers.JobStatus{}, fmt.Errorf("status of job %s of %s: %w", id, d.plan, err)
	}
	return st, nil
}

func (d *Driver) jobStatus(ctx context.Context, id string) (drivers.JobStatus, error) {
	s, err := d.findJob(ctx, id)
	if err != nil {
		return drivers.JobStatus{}, err
	}
	if s == nil {
		return drivers.JobStatus{}, drivers.ErrJobNotFound
	}
	res, err := d.cli.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return drivers.JobStatus{}, drivers.ErrJobNotFound
	}
	if err != nil {
		return drivers.JobStatus{}, fmt.Errorf("inspect the job's container: %w", err)
	}
	info := res.Container
	var timeout time.Duration
	if info.Config != nil {
		timeout, _ = time.ParseDuration(info.Config.Labels[LabelTimeout])
	}
	state := info.State
	if state == nil {
		return drivers.JobStatus{Message: "the engine reports no state"}, nil
	}
	started, _ := time.Parse(time.RFC3339Nano, state.StartedAt)
	finished, _ := time.Parse(time.RFC3339Nano, state.FinishedAt)
	var js drivers.JobStatus
	switch {
	case state.Status == container.StateCreated:
		js.Message = "created, not started yet"
		return js, nil
	case state.Running && timeout > 0 && !started.IsZero() && d.opts.Clock.Since(started) >= timeout:
		if _, err := d.cli.ContainerKill(ctx, s.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
			return js, fmt.Errorf("kill the job after its timeout of %s: %w", timeout, err)
		}
		js.Done, js.ExitCode = true, exitKilled
		js.Message = fmt.Sprintf("killed after its timeout of %s", timeout)
	case state.Running:
		js.Message = "running since " + started.UTC().Format(time.RFC3339)
	default:
		js.Done, js.ExitCode = true, state.ExitCode
		js.Succeeded = state.ExitCode == 0 && !state.OOMKilled && state.Status != container.StateDead
		switch {
		case state.ExitCode == exitKilled && timeout > 0 && finished.Sub(started) >= timeout:
			js.Message = fmt.Sprintf("killed after its timeout of %s", timeout)
		case state.OOMKilled:
			js.Message = fmt.Sprintf("killed for lack of memory (exit code %d)", state.ExitCode)
		case state.Error != "":
			js.Message = fmt.Sprintf("exit code %d: %s", state.ExitCode, state.Error)
		default:
			js.Message = fmt.Sprintf("exited with code %d", state.ExitCode)
		}
	}
	js.Logs = d.jobLogs(ctx, s.ID)
	return js, nil
}

// jobLogs is the tail of a job's output, stdout and stderr interleaved as
// the engine kept them; empty if the engine cannot give it.
func (d *Driver) jobLogs(ctx context.Context, cid string) string {
	rc, err := d.cli.ContainerLogs(ctx, cid, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(d.opts.JobLogLines)})
	if err != nil {
		return ""
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		return strings.TrimSpace(out.String())
	}
	return strings.TrimSpace(out.String())
}

// findJob returns the container of the plan's job id, nil if there is none.
func (d *Driver) findJob(ctx context.Context, id string) (*container.Summary, error) {
	f := client.Filters{}.Add("label", LabelJob+"="+id).Add("label", LabelPlan+"="+d.plan)
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("look for the job's container: %w", err)
	}
	for _, c := range res.Items {
		if c.Labels[LabelJob] == id && c.Labels[LabelPlan] == d.plan {
			return &c, nil
		}
	}
	return nil, nil
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// jobName is a container name unique to a plan's job id: the engine's
// uniqueness of names keeps two starts of one id from both creating.
func jobName(planName, id string) string {
	safe := unsafeName.ReplaceAllString(id, "-")
	name := "hal9-job-" + planName + "-" + safe
	if safe != id || len(name) > 200 {
		sum := sha256.Sum256([]byte(id))
		name = "hal9-job-" + planName + "-" + truncate(safe, 100) + "-" + hex.EncodeToString(sum[:4])
	}
	return name
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// RemoveJob removes a done job's container, once its outcome and logs have
// been read and recorded. A job not found is removed already; a job still
// running is an error.
func (d *Driver) RemoveJob(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove job %s of %s: %w", id, d.plan, err)
	}
	s, err := d.findJob(ctx, id)
	if err != nil {
		return fmt.Errorf("remove job %s of %s: %w", id, d.plan, err)
	}
	if s == nil {
		return nil
	}
	if s.State == container.StateRunning || s.State == container.StateRestarting || s.State == container.StatePaused {
		return fmt.Errorf("remove job %s of %s: it is still running", id, d.plan)
	}
	if _, err := d.cli.ContainerRemove(ctx, s.ID, client.ContainerRemoveOptions{RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove job %s of %s: %w", id, d.plan, err)
	}
	d.opts.Log.Info("job removed", "plan", d.plan, "job", id)
	return nil
}
