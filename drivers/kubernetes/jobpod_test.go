package kubernetes

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
	"github.com/hal9ai/hal9-migrate/drivers/drivertest"
	"github.com/hal9ai/hal9-migrate/plan"
)

// TestJobPodSecurity checks on the API server that a job's pod is what the
// restricted Pod Security Standard wants, in a namespace that enforces it,
// without an API token unless the plan names a ServiceAccount, and that a
// named ServiceAccount is the pod's.
func TestJobPodSecurity(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	ctx := ctxT(t)
	nsObj, err := f.kube.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := f.kube.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "migrator", Namespace: f.ns}}
	if _, err := f.kube.CoreV1().ServiceAccounts(f.ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := f.driver(t)
	plain := plan.Run{Image: "migrator:1", Env: map[string]string{"KWOK_EXIT_CODE": "0"}}
	named := plain
	named.ServiceAccountName = "migrator"

	for _, c := range []struct {
		id  string
		run plan.Run
	}{{"plain", plain}, {"named", named}} {
		t.Run(c.id, func(t *testing.T) {
			if err := d.StartJob(ctx, c.id, c.run); err != nil {
				t.Fatal(err)
			}
			j, err := f.kube.BatchV1().Jobs(f.ns).Get(ctx, c.id, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkPodSpec(t, "the Job's pod template", j.Spec.Template.Spec, c.run.ServiceAccountName)

			// The job controller's pod passes the namespace's
			// restricted admission and runs to its end.
			var st drivers.JobStatus
			err = drivertest.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
				st, err = d.JobStatus(ctx, c.id)
				return st.Done, err
			})
			if err != nil || !st.Succeeded {
				t.Fatalf("job %s: %+v, %v; events: %s", c.id, st, err, jobEvents(t, f, j))
			}
			pods, err := f.kube.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + c.id})
			if err != nil || len(pods.Items) != 1 {
				t.Fatalf("pods of job %s: %v, %v", c.id, pods, err)
			}
			pod := pods.Items[0].Spec
			want := c.run.ServiceAccountName
			if want == "" {
				want = "default"
			}
			if pod.ServiceAccountName != want {
				t.Errorf("the pod runs as %q, want %q", pod.ServiceAccountName, want)
			}
			tokens := 0
			for _, v := range pod.Volumes {
				if v.Projected != nil && strings.HasPrefix(v.Name, "kube-api-access-") {
					tokens++
				}
			}
			if wantTokens := map[bool]int{true: 1, false: 0}[c.run.ServiceAccountName != ""]; tokens != wantTokens {
				t.Errorf("the pod has %d API token volumes, want %d: %+v", tokens, wantTokens, pod.Volumes)
			}
		})
	}
}

func checkPodSpec(t *testing.T, what string, s corev1.PodSpec, serviceAccount string) {
	t.Helper()
	psc := s.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context %+v", what, psc)
	}
	if len(s.Containers) != 1 {
		t.Fatalf("%s: %d containers", what, len(s.Containers))
	}
	c := s.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
		sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: container security context %+v", what, sc)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/tmp" || c.VolumeMounts[0].ReadOnly {
		t.Errorf("%s: mounts %+v, want a writable /tmp", what, c.VolumeMounts)
	}
	if s.ServiceAccountName != serviceAccount {
		t.Errorf("%s: service account %q, want %q", what, s.ServiceAccountName, serviceAccount)
	}
	switch automount := s.AutomountServiceAccountToken; {
	case serviceAccount == "" && (automount == nil || *automount):
		t.Errorf("%s: automountServiceAccountToken %v, want false", what, automount)
	case serviceAccount != "" && automount != nil:
		t.Errorf("%s: automountServiceAccountToken %v, want unset: the ServiceAccount decides", what, *automount)
	}
}

// jobEvents lists the Events of a Job, to say why its pod is missing.
func jobEvents(t *testing.T, f *fixture, j *batchv1.Job) string {
	t.Helper()
	evs, err := f.kube.CoreV1().Events(f.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + j.Name})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range evs.Items {
		b.WriteString(e.Reason + ": " + e.Message + "; ")
	}
	return b.String()
}

// TestWaiting says why a job's container does not start, and stays quiet
// while it is only being created.
func TestWaiting(t *testing.T) {
	pod := func(reason, message string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "run", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		}}}}
	}
	for _, c := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{nil, ""},
		{pod("ContainerCreating", ""), ""},
		{pod("CreateContainerConfigError", "container has runAsNonRoot and image will run as root"),
			"CreateContainerConfigError: container has runAsNonRoot and image will run as root"},
		{pod("ImagePullBackOff", ""), "ImagePullBackOff"},
	} {
		if got := waiting(c.pod); got != c.want {
			t.Errorf("waiting(%+v) = %q, want %q", c.pod, got, c.want)
		}
	}
}

// TestJobRemovedWithItsPods checks on the API server that a Job carries
// ttlSecondsAfterFinished as a backstop, and that RemoveJob, once the
// Job's outcome is read, deletes it and, by background propagation, its
// pod, while a running Job is not deleted.
func TestJobRemovedWithItsPods(t *testing.T) {
	f := newFixture(t, fixtureOpts{replicas: 1})
	ctx := ctxT(t)
	d := f.driver(t)
	var rm drivers.JobRemover
	if r, ok := drivers.Driver(d).(drivers.JobRemover); ok {
		rm = r
	} else {
		t.Fatal("the Kubernetes driver does not remove jobs (drivers.JobRemover)")
	}
	if err := d.StartJob(ctx, "done", succeedingJob); err != nil {
		t.Fatal(err)
	}
	if err := d.StartJob(ctx, "running", slowJob); err != nil {
		t.Fatal(err)
	}
	j, err := f.kube.BatchV1().Jobs(f.ns).Get(ctx, "done", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ttl := j.Spec.TTLSecondsAfterFinished; ttl == nil || time.Duration(*ttl)*time.Second != JobTTL {
		t.Errorf("the Job's ttlSecondsAfterFinished = %v, want %s", ttl, JobTTL)
	}
	var st drivers.JobStatus
	err = drivertest.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err = d.JobStatus(ctx, "done")
		return st.Done, err
	})
	if err != nil || !st.Succeeded {
		t.Fatalf("job done: %+v, %v", st, err)
	}
	pods := func(name string) int {
		t.Helper()
		l, err := f.kube.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + name})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	if n := pods("done"); n != 1 {
		t.Fatalf("job done has %d pods before RemoveJob, want 1", n)
	}
	if err := rm.RemoveJob(ctx, "done"); err != nil {
		t.Fatalf("RemoveJob: %v", err)
	}
	// The Job goes at once; its pod once the garbage collector has seen it.
	err = drivertest.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, jerr := f.kube.BatchV1().Jobs(f.ns).Get(ctx, "done", metav1.GetOptions{})
		return apierrors.IsNotFound(jerr) && pods("done") == 0, nil
	})
	if err != nil {
		t.Errorf("job done and its pod after RemoveJob: %v (pods left: %d)", err, pods("done"))
	}
	if _, err := d.JobStatus(ctx, "done"); !errors.Is(err, drivers.ErrJobNotFound) {
		t.Errorf("JobStatus after RemoveJob = %v, want not found", err)
	}
	if err := rm.RemoveJob(ctx, "running"); err == nil {
		t.Error("RemoveJob of a running job = nil, want an error")
	}
	if _, err := f.kube.BatchV1().Jobs(f.ns).Get(ctx, "running", metav1.GetOptions{}); err != nil {
		t.Errorf("the running job after a refused RemoveJob: %v", err)
	}
}
