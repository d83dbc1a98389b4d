package flagd

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
)

// oneFlag renders a document of one flag, name "f", with body the flag's
// fields as Render indents them.
func oneFlag(body string) string {
	return `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "f": {
      "state": "ENABLED",
      "variants": {
        "off": false,
        "on": true
      },
` + body + `
    }
  }
}`
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags map[string]int
		want  string
	}{
		{"none", map[string]int{}, `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {}
}`},
		{"0%", map[string]int{"f": 0}, oneFlag(`      "defaultVariant": "off"`)},
		{"100%", map[string]int{"f": 100}, oneFlag(`      "defaultVariant": "on"`)},
		{"1%", map[string]int{"f": 1}, oneFlag(`      "defaultVariant": "off",
      "targeting": {
        "fractional": [
          [
            "on",
            1
          ],
          [
            "off",
            99
          ]
        ]
      }`)},
		{"99%", map[string]int{"f": 99}, oneFlag(`      "defaultVariant": "off",
      "targeting": {
        "fractional": [
          [
            "on",
            99
          ],
          [
            "off",
            1
          ]
        ]
      }`)},
		{"several flags, in name order", map[string]int{"new_cart": 10, "all": 100, "none": 0}, `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "all": {
      "state": "ENABLED",
      "variants": {
        "off": false,
        "on": true
      },
      "defaultVariant": "on"
    },
    "new_cart": {
      "state": "ENABLED",
      "variants": {
        "off": false,
        "on": true
      },
      "defaultVariant": "off",
      "targeting": {
        "fractional": [
          [
            "on",
            10
          ],
          [
            "off",
            90
          ]
        ]
      }
    },
    "none": {
      "state": "ENABLED",
      "variants": {
        "off": false,
        "on": true
      },
      "defaultVariant": "off"
    }
  }
}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Render(tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("Render(%v) =\n%s\nwant\n%s", tc.flags, b, tc.want)
			}
		})
	}
}

func TestRenderOutOfRange(t *testing.T) {
	for _, pct := range []int{-1, 101} {
		_, err := Render(map[string]int{"ok": 50, "x": pct})
		if err == nil || !strings.Contains(err.Error(), "flag x") {
			t.Errorf("Render of x at %d%%: error %v, want one naming x", pct, err)
		}
	}
}

// TestRenderStable renders the same flags, built in different orders, many
// times: the bytes must not change, as a file or ConfigMap rewritten with
// the same flags must not.
func TestRenderStable(t *testing.T) {
	names := []string{"zeta", "alpha", "mid", "beta", "omega", "a.b-c", "Upper"}
	forward, backward := map[string]int{}, map[string]int{}
	for i, n := range names {
		forward[n] = i * 15
	}
	for i := len(names) - 1; i >= 0; i-- {
		backward[names[i]] = i * 15
	}
	first, err := Render(forward)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		for _, flags := range []map[string]int{forward, backward} {
			b, err := Render(flags)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != string(first) {
				t.Fatalf("Render gave\n%s\nthen\n%s", first, b)
			}
		}
	}
	last := -1
	for _, n := range []string{"Upper", "a.b-c", "alpha", "beta", "mid", "omega", "zeta"} {
		i := strings.Index(string(first), `"`+n+`": {`)
		if i <= last {
			t.Errorf("flag %s is not in name order:\n%s", n, first)
		}
		last = i
	}
}

func TestRoundTrip(t *testing.T) {
	for _, flags := range []map[string]int{
		{},
		{"f": 0},
		{"f": 100},
		{"f": 1},
		{"f": 50},
		{"f": 99},
		{"hierarchical_neurons": 10, "substrate_abstraction": 25, "off": 0, "on": 100, "x.y-z": 99},
	} {
		b, err := Render(flags)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if !maps.Equal(got, flags) {
			t.Errorf("%v read back as %v\n%s", flags, got, b)
		}
	}
	for p := range 101 {
		flags := map[string]int{"f": p}
		b, err := Render(flags)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Parse(b); err != nil || got["f"] != p {
			t.Errorf("%d%% read back as %v, %v", p, got, err)
		}
	}
}

// TestFormat checks what Render writes against flagd's flag-definition
// format: the $schema, and for every flag the state ENABLED, boolean
// variants on and off, a default variant among them, and for a share
// fractional targeting over those variants whose weights add up to 100.
func TestFormat(t *testing.T) {
	flags := map[string]int{"new_path": 20, "all": 100, "none": 0, "half": 50}
	b, err := Render(flags)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	if len(doc) != 2 {
		t.Errorf("top-level keys = %v, want $schema and flags", keys(doc))
	}
	var schema string
	if err := json.Unmarshal(doc["$schema"], &schema); err != nil || schema != "https://flagd.dev/schema/v0/flags.json" {
		t.Errorf("$schema = %s", doc["$schema"])
	}
	var defs map[string]struct {
		State          string         `json:"state"`
		Variants       map[string]any `json:"variants"`
		DefaultVariant string         `json:"defaultVariant"`
		Targeting      map[string]any `json:"targeting"`
	}
	if err := json.Unmarshal(doc["flags"], &defs); err != nil {
		t.Fatalf("flags: %v", err)
	}
	if len(defs) != len(flags) {
		t.Errorf("%d flags, want %d", len(defs), len(flags))
	}
	for name, pct := range flags {
		fl, ok := defs[name]
		if !ok {
			t.Errorf("flag %s missing", name)
			continue
		}
		if fl.State != "ENABLED" {
			t.Errorf("%s: state %q", name, fl.State)
		}
		if len(fl.Variants) != 2 || fl.Variants["on"] != true || fl.Variants["off"] != false {
			t.Errorf("%s: variants %v", name, fl.Variants)
		}
		wantDefault := "off"
		if pct == 100 {
			wantDefault = "on"
		}
		if fl.DefaultVariant != wantDefault {
			t.Errorf("%s: defaultVariant %q, want %q", name, fl.DefaultVariant, wantDefault)
		}
		if pct == 0 || pct == 100 {
			if fl.Targeting != nil {
				t.Errorf("%s at %d%%: targeting %v, want none", name, pct, fl.Targeting)
			}
			continue
		}
		if len(fl.Targeting) != 1 {
			t.Errorf("%s: targeting %v, want fractional alone", name, fl.Targeting)
		}
		frac, _ := json.Marshal(fl.Targeting["fractional"])
		want, _ := json.Marshal([]any{[]any{"on", pct}, []any{"off", 100 - pct}})
		if string(frac) != string(want) {
			t.Errorf("%s: fractional %s, want %s", name, frac, want)
		}
	}
}

func keys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestParseByHand reads definitions a person might write.
func TestParseByHand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flag    string
		want    int
		invalid bool
	}{
		{"bucketing expression", `{"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "no",
		  "targeting": {"fractional": [{"var": "email"}, ["yes", 30], ["no", 70]]}}`, 30, false},
		{"weights left out", `{"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "no",
		  "targeting": {"fractional": [["yes"], ["no"]]}}`, 50, false},
		{"weights not out of 100", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"fractional": [["on", 1], ["off", 2]]}}`, 33, false},
		{"disabled", `{"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}`, 0, false},
		{"default by value", `{"state": "ENABLED", "variants": {"enabled": true, "disabled": false}, "defaultVariant": "enabled"}`, 100, false},
		{"empty targeting", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "targeting": {}}`, 100, false},
		{"not boolean", `{"state": "ENABLED", "variants": {"red": "#f00", "blue": "#00f"}, "defaultVariant": "red"}`, 0, true},
		{"unknown variant", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"fractional": [["maybe", 50], ["off", 50]]}}`, 0, true},
		{"weight not a number", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"fractional": [["on", "10"], ["off", 90]]}}`, 0, true},
		{"other targeting", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"if": [true, "on", "off"]}}`, 0, true},
		{"a negative weight", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"fractional": [["on", 200], ["off", -100]]}}`, 0, true},
		{"a weight beyond any share", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"fractional": [["on", 1e308], ["off", 1e308]]}}`, 0, true},
		{"no weight at all", `{"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
		  "targeting": {"fractional": [["on", 0], ["off", 0]]}}`, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"flags": {"ok": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}, "f": ` + tc.flag + `}}`
			got, err := Parse([]byte(doc))
			if tc.invalid {
				if err == nil || !strings.Contains(err.Error(), "[f]") {
					t.Errorf("error = %v, want one naming f", err)
				}
				if want := map[string]int{"ok": 100}; !maps.Equal(got, want) {
					t.Errorf("Parse = %v, want %v", got, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]int{"ok": 100, "f": tc.want}; !maps.Equal(got, want) {
				t.Errorf("Parse = %v, want %v", got, want)
			}
		})
	}
}

func TestParseNotJSON(t *testing.T) {
	for _, doc := range []string{``, `{`, `[]`, `{"flags": []}`} {
		if got, err := Parse([]byte(doc)); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", doc, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, flags := range []map[string]int{{}, {"a": 0, "b": 100, "c": 37}} {
		b, err := Render(flags)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"flags": {"f": {"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "no",
	  "targeting": {"fractional": [{"var": "email"}, ["yes"], ["no", 3]]}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		flags, err := Parse(data)
		if err != nil {
			return
		}
		for _, p := range flags {
			if p < 0 || p > 100 {
				return // negative weights: not a share, but Parse says what it read
			}
		}
		b, err := Render(flags)
		if err != nil {
			t.Fatalf("Render(%v): %v", flags, err)
		}
		again, err := Parse(b)
		if err != nil || !maps.Equal(again, flags) {
			t.Fatalf("%v rendered and read back as %v, %v", flags, again, err)
		}
	})
}
