package guardrails_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hal9ai/hal9-migrate/guardrails"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "now", want: now},
		{in: " now ", want: now},
		{in: "-2h", want: now.Add(-2 * time.Hour)},
		{in: "now-90m", want: now.Add(-90 * time.Minute)},
		{in: "now+1h", want: now.Add(time.Hour)},
		{in: "-1d12h", want: now.Add(-36 * time.Hour)},
		{in: "-1.5d", want: now.Add(-36 * time.Hour)},
		{in: "-2w", want: now.Add(-14 * 24 * time.Hour)},
		{in: "-1h30m15s250ms", want: now.Add(-(time.Hour + 30*time.Minute + 15*time.Second + 250*time.Millisecond))},
		{in: "-0", want: now},
		{in: "2026-11-27T10:00:00Z", want: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)},
		{in: "2026-11-27T10:00:00.5+01:00", want: time.Date(2026, 11, 27, 9, 0, 0, 5e8, time.UTC)},
		{in: "1795773600", want: time.Unix(1795773600, 0)},
		{in: "1795773600.25", want: time.Unix(1795773600, 25e7)},
		{in: "", err: "empty time"},
		{in: "yesterday", err: `time "yesterday": want RFC 3339`},
		{in: "-2", err: "want a unit"},
		{in: "-h", err: "want a number"},
		{in: "-2x", err: "want a unit"},
		{in: "now-", err: "empty duration"},
		{in: "nowish", err: "want RFC 3339"},
		{in: "2026-11-27", err: "want RFC 3339"},
		{in: "2026-11-27T10:00:00", err: "want RFC 3339 such as"},
		{in: "-9999999999h", err: "too long"},
		{in: "-999999999999w", err: "too long"},
		{in: "1e9", err: "want RFC 3339"},
		{in: "NaN", err: "want RFC 3339"},
	}
	for _, tc := range tests {
		got, err := guardrails.ParseTime(tc.in, now)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseTime(%q) = %s, %v; want error %q", tc.in, got, err, tc.err)
			}
		case err != nil || !got.Equal(tc.want):
			t.Errorf("ParseTime(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "-2h", "now-1d12h", "+1.5w", "2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123456789-07:00", "1795773600.5", "-1µs", "-3ms", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := guardrails.ParseTime(s, now)
		if err != nil {
			return
		}
		in := strings.TrimSpace(s)
		// A time before now is what a minus says, and the same duration
		// read alone says how much.
		if rel, ok := strings.CutPrefix(strings.TrimPrefix(in, "now"), "-"); ok {
			d, err := guardrails.ParseDuration(rel)
			if err != nil || !got.Equal(now.Add(-d)) || got.After(now) {
				t.Fatalf("ParseTime(%q) = %s, ParseDuration(%q) = %s, %v", s, got, rel, d, err)
			}
		}
		// What RFC 3339 can write, it reads back the same.
		if y := got.Year(); y >= 0 && y <= 9999 {
			back, err := guardrails.ParseTime(got.Format(time.RFC3339Nano), now)
			if err != nil || !back.Equal(got) {
				t.Fatalf("ParseTime(%q) = %s; its RFC 3339 form reads back as %s, %v", s, got, back, err)
			}
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "1d12h", "2w", "1.5h", "0", "1h2m3s4ms5us6ns", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := guardrails.ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %s: negative", s, d)
		}
		// Without d and w it reads as Go does.
		if !strings.ContainsAny(s, "dw") {
			if want, err := time.ParseDuration(s); err != nil || want != d {
				t.Fatalf("ParseDuration(%q) = %s; time.ParseDuration says %s, %v", s, d, want, err)
			}
		}
	})
}
