package main

import (
	"fmt"
	"strconv"
	"time"
)

// intervalFlag is a duration given in Go syntax (10s, 1m) or as a plain
// number of seconds, as the migration guide writes it (--interval 10).
type intervalFlag time.Duration

func (f *intervalFlag) String() string { return time.Duration(*f).String() }
func (f *intervalFlag) Type() string   { return "duration" }

func (f *intervalFlag) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n <= 0 {
			return fmt.Errorf("%s is not a positive number of seconds", s)
		}
		*f = intervalFlag(time.Duration(n * float64(time.Second)))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want seconds (10) or a duration (10s, 1m): %q", s)
	}
	if d <= 0 {
		return fmt.Errorf("%s is not a positive duration", s)
	}
	*f = intervalFlag(d)
	return nil
}
