package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/hal9ai/hal9-migrate/drivers/flagd"
)

// PublishFlags writes flags to the plan's flags ConfigMap, under the key
// flags.flagd.json, by server-side apply: the whole set, replacing what was
// there. flagd reads it with `--uri file:/etc/flagd/flags.flagd.json` from
// the ConfigMap mounted as a volume. A change of the set leaves a
// FlagsChanged Event on both Deployments; publishing the set already there
// leaves none.
func (d *Driver) PublishFlags(ctx context.Context, flags map[string]int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish flags of %s: %w", d.plan, err)
	}
	before, err := d.readFlags(ctx)
	if err != nil {
		return fmt.Errorf("publish flags of %s: %w", d.plan, err)
	}
	if err := d.publishFlags(ctx, flags); err != nil {
		return err
	}
	if maps.Equal(before, flags) {
		return nil
	}
	w, err := d.workloads(ctx)
	if err != nil {
		d.log.Warn("cannot record an event", "plan", d.plan, "reason", ReasonFlagsChanged, "err", err)
		return nil
	}
	d.event(ctx, w, ReasonFlagsChanged, "feature flags "+describeFlagChange(before, flags))
	return nil
}

// publishFlags applies the flags ConfigMap, leaving no Event.
func (d *Driver) publishFlags(ctx context.Context, flags map[string]int) error {
	data, err := flagd.Render(flags)
	if err != nil {
		return fmt.Errorf("publish flags of %s: %w", d.plan, err)
	}
	ac := corev1ac.ConfigMap(d.flags, d.ns).
		WithLabels(map[string]string{LabelManagedBy: FieldManager, LabelPlan: d.plan}).
		WithData(map[string]string{FlagsKey: string(data)})
	var got *corev1.ConfigMap
	err = retryWrite(ctx, func() (err error) {
		got, err = d.kube.CoreV1().ConfigMaps(d.ns).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		return err
	})
	if err != nil {
		return fmt.Errorf("publish flags of %s: apply configmap %s/%s: %w", d.plan, d.ns, d.flags, err)
	}
	d.read.wrote(got)
	return nil
}

// describeFlagChange says what became of the flags: "now a 10%, b 25%;
// removed c", or "now none".
func describeFlagChange(before, after map[string]int) string {
	s := "now " + describeFlags(after)
	var removed []string
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			removed = append(removed, k)
		}
	}
	if len(removed) > 0 {
		s += "; removed " + strings.Join(removed, ", ")
	}
	return s
}

// describeFlags lists flags with their rollouts, by name: "a 10%, b 25%".
func describeFlags(flags map[string]int) string {
	if len(flags) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		parts = append(parts, fmt.Sprintf("%s %d%%", k, flags[k]))
	}
	return strings.Join(parts, ", ")
}

// readFlags reads the published flags; nil when there is no ConfigMap.
func (d *Driver) readFlags(ctx context.Context) (map[string]int, error) {
	cm, err := d.read.configMap(ctx, d.ns, d.flags)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", d.ns, d.flags, err)
	}
	data, ok := cm.Data[FlagsKey]
	if !ok {
		return nil, nil
	}
	flags, err := flagd.Parse([]byte(data))
	if err != nil {
		// Someone edited the flags by hand: report the ones that still
		// read as rollouts and say which do not.
		d.log.Warn("flags configmap does not read as rollouts", "plan", d.plan, "configmap", d.ns+"/"+d.flags, "err", err)
	}
	return flags, nil
}
