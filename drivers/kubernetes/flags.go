package kubernetes

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/hal9ai/hal9-migrate/drivers/flagd"
)

// PublishFlags writes flags to the plan's flags ConfigMap, under the key
// flags.flagd.json, by server-side apply: the whole set, replacing what was
// there. flagd reads it with `--uri file:/etc/flagd/flags.flagd.json` from
// the ConfigMap mounted as a volume.
func (d *Driver) PublishFlags(ctx context.Context, flags map[string]int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish flags of %s: %w", d.plan, err)
	}
	data, err := flagd.Render(flags)
	if err != nil {
		return fmt.Errorf("publish flags of %s: %w", d.plan, err)
	}
	ac := corev1ac.ConfigMap(d.flags, d.ns).
		WithLabels(map[string]string{LabelManagedBy: FieldManager, LabelPlan: d.plan}).
		WithData(map[string]string{FlagsKey: string(data)})
	if _, err := d.kube.CoreV1().ConfigMaps(d.ns).Apply(ctx, ac, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("publish flags of %s: apply configmap %s/%s: %w", d.plan, d.ns, d.flags, err)
	}
	return nil
}

// readFlags reads the published flags; nil when there is no ConfigMap.
func (d *Driver) readFlags(ctx context.Context) (map[string]int, error) {
	cm, err := d.kube.CoreV1().ConfigMaps(d.ns).Get(ctx, d.flags, metav1.GetOptions{})
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
