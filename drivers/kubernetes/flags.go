package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

// flagd's flag-definition format (https://flagd.dev/reference/flag-definitions/),
// as much of it as the driver writes and reads: every flag is a boolean
// with the variants "on" and "off"; a flag at 0% or 100% is just its
// default variant, one in between gets fractional targeting, which buckets
// evaluation contexts by their targeting key.
const flagdSchema = "https://flagd.dev/schema/v0/flags.json"

type flagdFile struct {
	Schema string               `json:"$schema,omitempty"`
	Flags  map[string]flagdFlag `json:"flags"`
}

type flagdFlag struct {
	State          string          `json:"state"`
	Variants       map[string]any  `json:"variants"`
	DefaultVariant string          `json:"defaultVariant"`
	Targeting      json.RawMessage `json:"targeting,omitempty"`
}

// encodeFlags writes flags, names with rollout percentages, as flagd flag
// definitions.
func encodeFlags(flags map[string]int) ([]byte, error) {
	f := flagdFile{Schema: flagdSchema, Flags: map[string]flagdFlag{}}
	for name, pct := range flags {
		if pct < 0 || pct > 100 {
			return nil, fmt.Errorf("flag %s: %d%% is not within 0..100", name, pct)
		}
		fl := flagdFlag{State: "ENABLED", Variants: map[string]any{"on": true, "off": false}, DefaultVariant: "off"}
		switch pct {
		case 0:
		case 100:
			fl.DefaultVariant = "on"
		default:
			t, err := json.Marshal(map[string]any{"fractional": []any{[]any{"on", pct}, []any{"off", 100 - pct}}})
			if err != nil {
				return nil, err
			}
			fl.Targeting = t
		}
		f.Flags[name] = fl
	}
	return json.MarshalIndent(f, "", "  ")
}

// decodeFlags reads the rollout percentage of every flag: the share of
// fractional targeting given to variants whose value is true, or 100 or 0
// after the default variant. A disabled flag is at 0. Flags it cannot make
// sense of are left out, and the returned error names them.
func decodeFlags(data []byte) (map[string]int, error) {
	var f flagdFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not flagd flag definitions: %w", err)
	}
	out := map[string]int{}
	var bad []string
	for name, fl := range f.Flags {
		pct, ok := flagPercent(fl)
		if !ok {
			bad = append(bad, name)
			continue
		}
		out[name] = pct
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return out, fmt.Errorf("flags %v are not boolean rollouts", bad)
	}
	return out, nil
}

func flagPercent(fl flagdFlag) (int, bool) {
	if fl.State == "DISABLED" {
		return 0, true
	}
	isOn := func(variant string) (bool, bool) {
		v, ok := fl.Variants[variant].(bool)
		return v, ok
	}
	if len(fl.Targeting) > 0 && string(fl.Targeting) != "null" && string(fl.Targeting) != "{}" {
		var t struct {
			Fractional []json.RawMessage `json:"fractional"`
		}
		if err := json.Unmarshal(fl.Targeting, &t); err != nil || len(t.Fractional) == 0 {
			return 0, false
		}
		on, total := 0.0, 0.0
		for _, raw := range t.Fractional {
			var bucket []any
			if json.Unmarshal(raw, &bucket) != nil || len(bucket) == 0 {
				continue // the optional bucketing expression
			}
			variant, ok := bucket[0].(string)
			if !ok {
				return 0, false
			}
			w := 1.0 // flagd's default weight
			if len(bucket) > 1 {
				if w, ok = bucket[1].(float64); !ok {
					return 0, false
				}
			}
			v, ok := isOn(variant)
			if !ok {
				return 0, false
			}
			total += w
			if v {
				on += w
			}
		}
		if total <= 0 {
			return 0, false
		}
		return int(100*on/total + 0.5), true
	}
	v, ok := isOn(fl.DefaultVariant)
	if !ok {
		return 0, false
	}
	if v {
		return 100, true
	}
	return 0, true
}

// PublishFlags writes flags to the plan's flags ConfigMap, under the key
// flags.flagd.json, by server-side apply: the whole set, replacing what was
// there. flagd reads it with `--uri file:/etc/flagd/flags.flagd.json` from
// the ConfigMap mounted as a volume.
func (d *Driver) PublishFlags(ctx context.Context, flags map[string]int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish flags of %s: %w", d.plan, err)
	}
	data, err := encodeFlags(flags)
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
	flags, err := decodeFlags([]byte(data))
	if err != nil {
		// Someone edited the flags by hand: report the ones that still
		// read as rollouts and say which do not.
		d.log.Warn("flags configmap does not read as rollouts", "plan", d.plan, "configmap", d.ns+"/"+d.flags, "err", err)
	}
	return flags, nil
}
