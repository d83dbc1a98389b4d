package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/plan"
)

// ExitUnknown is the exit code reported for a job that failed without a
// container exit code to show: stopped at its timeout, or its pod gone.
const ExitUnknown = -1

// Job logs: how much of the end of the output is kept, and how long
// reading it may take (the kubelet may be unreachable).
const (
	logTailLines = 100
	logMaxBytes  = 64 << 10
	logTimeout   = 3 * time.Second
)

// JobTTL is how long Kubernetes keeps a finished Job the daemon has not
// removed (ttlSecondsAfterFinished): a backstop for a daemon that never came
// back to record it, long enough for one that is down a while to still read
// its outcome. The daemon removes a Job once it has recorded its outcome.
const JobTTL = 7 * 24 * time.Hour

// jobName turns a job id into a Job name: the id itself when it is a valid
// DNS-1123 label (so that `kubectl get job ID` works), otherwise a label
// made of it with a hash of the whole id, so that different ids never share
// a name. The id is also kept in an annotation.
func jobName(id string) string {
	if len(validation.IsDNS1123Label(id)) == 0 {
		return id
	}
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	sum := sha256.Sum256([]byte(id))
	base := strings.Trim(b.String(), "-")
	if len(base) > 52 {
		base = strings.TrimRight(base[:52], "-")
	}
	if base == "" {
		base = "job"
	}
	return base + "-" + hex.EncodeToString(sum[:5])
}

// StartJob creates a batch Job for run under id, unless one exists: one
// pod, never restarted nor retried, stopped by Kubernetes at run.Timeout,
// deleted by Kubernetes JobTTL after it finished unless RemoveJob deleted
// it before.
func (d *Driver) StartJob(ctx context.Context, id string, run plan.Run) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start job %s: %w", id, err)
	}
	if run.Image == "" {
		return fmt.Errorf("start job %s: no image", id)
	}
	name := jobName(id)
	labels := map[string]string{LabelManagedBy: FieldManager, LabelPlan: d.plan}
	var env []corev1.EnvVar
	for _, k := range slices.Sorted(maps.Keys(run.Env)) {
		env = append(env, corev1.EnvVar{Name: k, Value: run.Env[k]})
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: d.ns, Labels: labels,
			Annotations: map[string]string{AnnotationJobID: id},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr(int32(0)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{AnnotationJobID: id}},
				Spec:       jobPodSpec(run, env),
			},
		},
	}
	job.Spec.TTLSecondsAfterFinished = ptr(int32(JobTTL / time.Second))
	if t := run.Timeout.Std(); t > 0 {
		job.Spec.ActiveDeadlineSeconds = ptr(int64((t + time.Second - 1) / time.Second))
	}
	var got *batchv1.Job
	err := retryWrite(ctx, func() (err error) {
		got, err = d.kube.BatchV1().Jobs(d.ns).Create(ctx, job, metav1.CreateOptions{FieldManager: FieldManager})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		have, gerr := d.api.job(ctx, d.ns, name)
		if gerr != nil {
			return fmt.Errorf("start job %s: %w", id, gerr)
		}
		if have.Annotations[AnnotationJobID] != id {
			return fmt.Errorf("start job %s: job %s/%s exists and belongs to job id %q", id, d.ns, name, have.Annotations[AnnotationJobID])
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("start job %s: create job %s/%s: %w", id, d.ns, name, err)
	}
	d.read.wrote(got)
	// Read it back: from the informer cache, that starts the watch of the
	// namespace's Jobs, so that the Job's end wakes the plan.
	if _, err := d.read.job(ctx, d.ns, name); err != nil {
		return fmt.Errorf("start job %s: read job %s/%s: %w", id, d.ns, name, err)
	}
	return nil
}

// jobPodSpec is the pod a job runs in, as the restricted Pod Security
// Standard wants it: a non-root user, no privilege escalation, no
// capabilities, the runtime's seccomp profile, and a read-only root file
// system with a writable /tmp. The pod gets an API token only when the
// plan names a ServiceAccount for it: a migration job has no business with
// the API server otherwise.
func jobPodSpec(run plan.Run, env []corev1.EnvVar) corev1.PodSpec {
	spec := corev1.PodSpec{
		RestartPolicy:      corev1.RestartPolicyNever,
		ServiceAccountName: run.ServiceAccountName,
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name: "run", Image: run.Image, Command: run.Command, Args: run.Args, Env: env,
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr(false),
				ReadOnlyRootFilesystem:   ptr(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
		}},
		Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}
	if run.ServiceAccountName == "" {
		spec.AutomountServiceAccountToken = ptr(false)
	}
	return spec
}

// JobStatus reports the Job started under id: done once Kubernetes marks
// it Complete or Failed, the exit code from its pod's container state, and
// the end of its logs when the kubelet serves them.
func (d *Driver) JobStatus(ctx context.Context, id string) (drivers.JobStatus, error) {
	if err := ctx.Err(); err != nil {
		return drivers.JobStatus{}, fmt.Errorf("status of job %s: %w", id, err)
	}
	name := jobName(id)
	j, err := d.read.job(ctx, d.ns, name)
	if apierrors.IsNotFound(err) {
		return drivers.JobStatus{}, fmt.Errorf("job %s (%s/%s): %w", id, d.ns, name, drivers.ErrJobNotFound)
	}
	if err != nil {
		return drivers.JobStatus{}, fmt.Errorf("status of job %s: get job %s/%s: %w", id, d.ns, name, err)
	}
	if j.Annotations[AnnotationJobID] != id {
		return drivers.JobStatus{}, fmt.Errorf("job %s: job %s/%s belongs to job id %q: %w", id, d.ns, name, j.Annotations[AnnotationJobID], drivers.ErrJobNotFound)
	}
	var st drivers.JobStatus
	var failed *batchv1.JobCondition
	for i, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			st.Done, st.Succeeded = true, true
		case batchv1.JobFailed:
			st.Done, failed = true, &j.Status.Conditions[i]
		}
	}
	// A done Job's pod is read from the API server: its watch may not
	// have shown the container's end yet, and the exit code is the
	// outcome. It is read once: the job is removed once recorded.
	pods := d.read
	if st.Done {
		pods = d.api
	}
	pod, err := d.jobPod(ctx, pods, j)
	if err != nil {
		return drivers.JobStatus{}, fmt.Errorf("status of job %s: %w", id, err)
	}
	code, term, ran := exitCode(pod)
	switch {
	case !st.Done:
		st.Message = "running"
		if pod != nil {
			st.Message = "pod " + pod.Name + " is " + strings.ToLower(string(pod.Status.Phase))
			if w := waiting(pod); w != "" {
				st.Message += ": " + w
			}
		}
		return st, nil
	case st.Succeeded:
		st.Message = "completed"
	default:
		st.ExitCode = code
		if !ran || code == 0 {
			st.ExitCode = ExitUnknown
		}
		st.Message = strings.TrimSpace(failed.Reason + ": " + failed.Message)
		if failed.Reason == batchv1.JobReasonDeadlineExceeded && j.Spec.ActiveDeadlineSeconds != nil {
			st.Message = fmt.Sprintf("timed out after %s", time.Duration(*j.Spec.ActiveDeadlineSeconds)*time.Second)
		}
		if ran && code != 0 {
			st.Message += fmt.Sprintf("; container %s exited with code %d", term, code)
		}
		if w := waiting(pod); !ran && w != "" {
			st.Message += "; the container never started: " + w
		}
	}
	if pod != nil && ran {
		st.Logs = d.jobLogs(ctx, j.Name, pod)
	}
	return st, nil
}

// jobPod returns the Job's newest pod, or nil, as r reads it.
func (d *Driver) jobPod(ctx context.Context, r reader, j *batchv1.Job) (*corev1.Pod, error) {
	sel := labels.SelectorFromSet(labels.Set{batchv1.JobNameLabel: j.Name})
	if s := j.Spec.Selector; s != nil && len(s.MatchLabels) > 0 {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(s); err != nil {
			return nil, fmt.Errorf("the selector of job %s/%s: %w", d.ns, j.Name, err)
		}
	}
	pods, err := r.pods(ctx, d.ns, sel)
	if err != nil {
		return nil, fmt.Errorf("list pods of job %s/%s: %w", d.ns, j.Name, err)
	}
	if len(pods) == 0 {
		return nil, nil
	}
	newest := pods[0]
	for _, p := range pods {
		if p.CreationTimestamp.After(newest.CreationTimestamp.Time) {
			newest = p
		}
	}
	return newest, nil
}

// exitCode returns the first non-zero exit code of the pod's containers
// (or 0), the container's name, and whether any container ran to its end.
func exitCode(pod *corev1.Pod) (code int, container string, ran bool) {
	if pod == nil {
		return 0, "", false
	}
	for _, c := range pod.Status.ContainerStatuses {
		t := c.State.Terminated
		if t == nil {
			continue
		}
		if !ran {
			container = c.Name
		}
		ran = true
		if t.ExitCode != 0 {
			return int(t.ExitCode), c.Name, true
		}
	}
	return 0, container, ran
}

// waiting says why a pod's container waits to start, when that is not the
// usual pulling and creating: an image that would run as root under the
// job's runAsNonRoot, an image that cannot be pulled. "" otherwise.
func waiting(pod *corev1.Pod) string {
	if pod == nil {
		return ""
	}
	for _, c := range pod.Status.ContainerStatuses {
		w := c.State.Waiting
		if w == nil || w.Reason == "" || w.Reason == "ContainerCreating" || w.Reason == "PodInitializing" {
			continue
		}
		if w.Message == "" {
			return w.Reason
		}
		return w.Reason + ": " + w.Message
	}
	return ""
}

// jobLogs returns the end of a finished pod's logs. Reading them goes
// through the node's kubelet, which may not answer (a fake node has
// none): the first attempt is kept either way, so a done job costs one try.
func (d *Driver) jobLogs(ctx context.Context, job string, pod *corev1.Pod) string {
	d.mu.Lock()
	logs, ok := d.logs[job]
	d.mu.Unlock()
	if ok {
		return logs
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, logTimeout)
	defer cancel()
	req := d.kube.CoreV1().Pods(d.ns).GetLogs(pod.Name, &corev1.PodLogOptions{
		TailLines: ptr(int64(logTailLines)), LimitBytes: ptr(int64(logMaxBytes)),
	})
	rc, err := req.Stream(ctx)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(io.LimitReader(rc, logMaxBytes))
		rc.Close()
		logs = string(b)
	}
	if err != nil {
		if parent.Err() != nil {
			return "" // the caller gave up: try again next time
		}
		d.log.Info("job logs are not available", "plan", d.plan, "job", job, "pod", pod.Name, "err", err)
	}
	d.mu.Lock()
	d.logs[job] = logs
	d.mu.Unlock()
	return logs
}

// RemoveJob deletes a finished Job, once its outcome and logs have been
// read and recorded, with its pods (propagation Background: the garbage
// collector deletes them after the Job). A Job not found is removed
// already; one still running is an error.
func (d *Driver) RemoveJob(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove job %s: %w", id, err)
	}
	// Read fresh: a Job the cache has not shown yet must not pass for
	// removed, nor a finished one for running.
	name := jobName(id)
	j, err := d.api.job(ctx, d.ns, name)
	if apierrors.IsNotFound(err) {
		d.read.removed(&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.ns}})
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove job %s: get job %s/%s: %w", id, d.ns, name, err)
	}
	if j.Annotations[AnnotationJobID] != id {
		return nil // the name is another id's: this one is gone
	}
	if !finished(j) {
		return fmt.Errorf("remove job %s: job %s/%s is still running", id, d.ns, name)
	}
	err = retryWrite(ctx, func() error {
		return d.kube.BatchV1().Jobs(d.ns).Delete(ctx, name, metav1.DeleteOptions{
			PropagationPolicy: ptr(metav1.DeletePropagationBackground),
			Preconditions:     &metav1.Preconditions{UID: &j.UID},
		})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove job %s: delete job %s/%s: %w", id, d.ns, name, err)
	}
	d.read.removed(j)
	d.mu.Lock()
	delete(d.logs, name)
	d.mu.Unlock()
	d.log.Info("job removed", "plan", d.plan, "job", id, "name", d.ns+"/"+name)
	return nil
}

// finished reports whether Kubernetes marked the Job Complete or Failed.
func finished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
			return true
		}
	}
	return false
}
