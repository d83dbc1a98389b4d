package kubernetes

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hal9ai/hal9-migrate/drivers"
)

// Event reasons, as `kubectl describe deployment` and `kubectl get events`
// show them.
const (
	ReasonTrafficShifted     = "TrafficShifted"
	ReasonMirroring          = "Mirroring"
	ReasonDecommissioned     = "Decommissioned"
	ReasonCheckpointCreated  = "CheckpointCreated"
	ReasonCheckpointRestored = "CheckpointRestored"
	ReasonFlagsChanged       = "FlagsChanged"
)

func reasonFor(t drivers.Target) string {
	switch {
	case t.Decommission:
		return ReasonDecommissioned
	case t.Mirror > 0:
		return ReasonMirroring
	}
	return ReasonTrafficShifted
}

func describeApply(t drivers.Target, rs replicas, route string) string {
	via := "by replica ratio"
	if route != "" {
		via = "through route " + route
	}
	s := fmt.Sprintf("candidate gets %d%% of traffic", t.Traffic)
	if t.Mirror > 0 {
		s += fmt.Sprintf(" and a %d%% mirror", t.Mirror)
	}
	s += fmt.Sprintf(" %s; stable %d replicas, candidate %d", via, rs.Stable, rs.Candidate)
	if t.Decommission {
		s += "; stable decommissioned"
	}
	return s
}

// event records what the driver did as an Event on both Deployments. An
// Event is a courtesy to people: failing to write one is logged, and does
// not fail the change it reports.
func (d *Driver) event(ctx context.Context, w workloads, reason, message string) {
	now := metav1.NewTime(d.clock.Now())
	message = fmt.Sprintf("hal9-migrate plan %s: %s", d.plan, message)
	for _, x := range []deployment{w.stable, w.candidate} {
		ev := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: x.Name + ".", Namespace: d.ns},
			InvolvedObject: corev1.ObjectReference{
				Kind: "Deployment", APIVersion: "apps/v1", Namespace: d.ns, Name: x.Name,
				UID: x.UID, ResourceVersion: x.ResourceVersion,
			},
			Reason: reason, Message: message, Type: corev1.EventTypeNormal,
			Source:         corev1.EventSource{Component: FieldManager},
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
			ReportingController: "migrate.hal9.ai/" + FieldManager, ReportingInstance: d.instance,
		}
		if _, err := d.kube.CoreV1().Events(d.ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			d.log.Warn("cannot record an event", "plan", d.plan, "deployment", d.ns+"/"+x.Name, "reason", reason, "err", err)
		}
	}
}
