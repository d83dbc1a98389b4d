package guardrails

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseTime reads a point in time as a person gives it on a command line:
//
//	now                        the time now
//	-2h, -1d12h, now-90m       that long before now (units ns us ms s m h,
//	                           d for 24h and w for 7d; + for after now)
//	2026-11-27T10:00:00Z       RFC 3339, with an offset or Z
//	1795773600, 1795773600.5   Unix seconds, as Prometheus takes them
func ParseTime(s string, now time.Time) (time.Time, error) {
	in := strings.TrimSpace(s)
	switch in {
	case "":
		return time.Time{}, errors.New("empty time: want RFC 3339, Unix seconds, now or a duration such as -2h")
	case "now":
		return now, nil
	}
	rel := in
	if r, ok := strings.CutPrefix(in, "now"); ok && r != "" {
		rel = r
	}
	if sign := rel[0]; sign == '-' || sign == '+' {
		d, err := ParseDuration(rel[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
		if sign == '-' {
			d = -d
		}
		return now.Add(d), nil
	}
	if strings.ContainsAny(in, "T:") {
		t, err := time.Parse(time.RFC3339Nano, in)
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: want RFC 3339 such as 2026-11-27T10:00:00Z", s)
		}
		return t, nil
	}
	if f, err := strconv.ParseFloat(in, 64); err == nil && f >= 0 && f < 1e11 && !strings.ContainsAny(in, "eExXpPnN_") {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-27T10:00:00Z), Unix seconds, now, or a duration before now (-2h)", s)
}

// units are the duration units ParseDuration knows, longest first so that
// "ms" is not read as "m".
var units = []struct {
	name string
	d    time.Duration
}{
	{"ns", time.Nanosecond}, {"us", time.Microsecond}, {"µs", time.Microsecond}, {"ms", time.Millisecond},
	{"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour},
}

// ParseDuration reads a duration in Go syntax with two more units, d (24h)
// and w (7 days): "90s", "1d12h", "2w". It takes no sign.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("duration %q: want a number before each unit, as in 90s, 2h or 1d12h", s)
		}
		num := rest[:i]
		rest = rest[i:]
		var unit time.Duration
		var name string
		for _, u := range units {
			if strings.HasPrefix(rest, u.name) {
				unit, name, rest = u.d, u.name, rest[len(u.name):]
				break
			}
		}
		if unit == 0 {
			return 0, fmt.Errorf("duration %q: want a unit (ns, us, ms, s, m, h, d or w) after %s", s, num)
		}
		var d time.Duration
		if name == "d" || name == "w" {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: bad number %q", s, num)
			}
			if n*float64(unit) >= math.MaxInt64 {
				return 0, fmt.Errorf("duration %q is too long", s)
			}
			d = time.Duration(n * float64(unit))
		} else {
			// Go's own parser, exact to the nanosecond.
			var err error
			if d, err = time.ParseDuration(num + name); err != nil {
				return 0, fmt.Errorf("duration %q: bad number %q or too long", s, num)
			}
		}
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += d
	}
	return total, nil
}
