package docker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// flagdSchema is the JSON schema flagd's flag-definition files declare.
const flagdSchema = "https://flagd.dev/schema/v0/flags.json"

// flagdFile is an OpenFeature flagd flag-definition file. Every flag is a
// boolean with variants "on" and "off": at 0% "off" for everyone, at 100%
// "on", in between a fractional split, which flagd buckets by the
// evaluation context's targetingKey so that a user keeps their variant.
type flagdFile struct {
	Schema string               `json:"$schema"`
	Flags  map[string]flagdFlag `json:"flags"`
}

type flagdFlag struct {
	State          string          `json:"state"`
	Variants       map[string]bool `json:"variants"`
	DefaultVariant string          `json:"defaultVariant"`
	Targeting      *flagdTargeting `json:"targeting,omitempty"`
}

type flagdTargeting struct {
	// Fractional is [["on", P], ["off", 100-P]].
	Fractional [][2]any `json:"fractional"`
}

// renderFlags renders flags, feature names with rollout percentages.
func renderFlags(flags map[string]int) ([]byte, error) {
	f := flagdFile{Schema: flagdSchema, Flags: map[string]flagdFlag{}}
	for name, p := range flags {
		if p < 0 || p > 100 {
			return nil, fmt.Errorf("flag %s: %d%% is not within 0..100", name, p)
		}
		fl := flagdFlag{State: "ENABLED", Variants: map[string]bool{"on": true, "off": false}, DefaultVariant: "off"}
		switch {
		case p == 100:
			fl.DefaultVariant = "on"
		case p > 0:
			fl.Targeting = &flagdTargeting{Fractional: [][2]any{{"on", p}, {"off", 100 - p}}}
		}
		f.Flags[name] = fl
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// parseFlags reads back the percentages of a file renderFlags wrote: the
// "on" bucket's share of a fractional split, else 100 or 0 by the default
// variant, 0 for a disabled flag.
func parseFlags(b []byte) (map[string]int, error) {
	var f struct {
		Flags map[string]struct {
			State          string          `json:"state"`
			DefaultVariant string          `json:"defaultVariant"`
			Targeting      json.RawMessage `json:"targeting"`
		} `json:"flags"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	out := make(map[string]int, len(f.Flags))
	for name, fl := range f.Flags {
		p := 0
		if fl.DefaultVariant == "on" {
			p = 100
		}
		if len(fl.Targeting) > 0 && string(fl.Targeting) != "null" && string(fl.Targeting) != "{}" {
			var t struct {
				Fractional []json.RawMessage `json:"fractional"`
			}
			if err := json.Unmarshal(fl.Targeting, &t); err != nil || t.Fractional == nil {
				return nil, fmt.Errorf("flag %s: targeting is not a fractional split", name)
			}
			on, total := 0.0, 0.0
			for _, raw := range t.Fractional {
				var bucket []any
				if err := json.Unmarshal(raw, &bucket); err != nil || len(bucket) != 2 {
					continue // the optional bucketing expression
				}
				v, _ := bucket[0].(string)
				w, ok := bucket[1].(float64)
				if !ok {
					return nil, fmt.Errorf("flag %s: fractional weight %v is not a number", name, bucket[1])
				}
				total += w
				if v == "on" {
					on += w
				}
			}
			if total > 0 {
				p = int(on*100/total + 0.5)
			}
		}
		if fl.State == "DISABLED" {
			p = 0
		}
		out[name] = p
	}
	return out, nil
}

func writeFlags(path string, flags map[string]int) error {
	b, err := renderFlags(flags)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readFlags reads the flags file; none written yet is no flags.
func readFlags(path string) (map[string]int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the flags: %w", err)
	}
	flags, err := parseFlags(b)
	if err != nil {
		return nil, fmt.Errorf("read the flags %s: %w", path, err)
	}
	return flags, nil
}
