// Package flagd renders a plan's feature flags, names with rollout
// percentages, as OpenFeature flagd flag definitions
// (https://flagd.dev/reference/flag-definitions/), and reads the
// percentages back from such definitions.
//
// Every flag is a boolean with the variants "on" and "off": at 0% its
// default variant is "off", at 100% "on", and in between it gets
// fractional targeting, which flagd buckets by the evaluation context's
// targeting key so that a user keeps their variant.
//
// The package only turns percentages into bytes and back. It does not
// write files or ConfigMaps (the drivers do, each where its flagd reads),
// does not talk to flagd, and understands only as much of the format as a
// boolean rollout needs: other targeting rules are reported, not evaluated.
package flagd

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// Schema is the JSON schema flagd's flag-definition documents declare.
const Schema = "https://flagd.dev/schema/v0/flags.json"

type document struct {
	Schema string          `json:"$schema,omitempty"`
	Flags  map[string]flag `json:"flags"`
}

type flag struct {
	State          string          `json:"state"`
	Variants       map[string]any  `json:"variants"`
	DefaultVariant string          `json:"defaultVariant"`
	Targeting      json.RawMessage `json:"targeting,omitempty"`
}

// Render writes flags, names with rollout percentages within 0..100, as a
// flagd flag-definition document: indented JSON with the flags in name
// order, so that the same flags always give the same bytes. It ends
// without a newline.
func Render(flags map[string]int) ([]byte, error) {
	f := document{Schema: Schema, Flags: map[string]flag{}}
	for name, pct := range flags {
		if pct < 0 || pct > 100 {
			return nil, fmt.Errorf("flag %s: %d%% is not within 0..100", name, pct)
		}
		fl := flag{State: "ENABLED", Variants: map[string]any{"on": true, "off": false}, DefaultVariant: "off"}
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

// Parse reads the rollout percentage of every flag of a flagd document:
// the share of fractional targeting given to variants whose value is
// true, or 100 or 0 after the default variant's value. A disabled flag is
// at 0. It reads what Render writes and what a person might write by
// hand: any variant names, a bucketing expression, weights left out
// (flagd's default weight is 1). Flags it cannot read as boolean rollouts
// are left out, and the returned error names them next to the flags it
// could read.
func Parse(data []byte) (map[string]int, error) {
	var f document
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not flagd flag definitions: %w", err)
	}
	out := map[string]int{}
	var bad []string
	for name, fl := range f.Flags {
		pct, ok := percent(fl)
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

// percent is the rollout percentage of one flag, false if it is not a
// boolean rollout.
func percent(fl flag) (int, bool) {
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
				// A weight is a share of the requests: a negative or
				// unbounded one is no share at all.
				if w, ok = bucket[1].(float64); !ok || w < 0 || math.IsInf(w, 0) || math.IsNaN(w) || w > 1e9 {
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
