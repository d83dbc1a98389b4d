package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux this runs on.
const clockTicks = 100

// cpuSeconds is the CPU time pid and its live children have used, user and
// system, plus what its children that ended and were waited for used
// (cutime, cstime): a daemon that runs helpers is charged for them.
func cpuSeconds(pid int) (float64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, i := range []int{13, 14, 15, 16} { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[i], 64)
		total += v
	}
	for _, c := range children(pid) {
		if s, err := cpuSeconds(c); err == nil {
			total += s * clockTicks
		}
	}
	return total / clockTicks, nil
}

// statFields splits /proc/PID/stat, whose second field (the command, in
// parentheses) may hold spaces.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	rest := strings.Fields(s[i+1:])
	return append([]string{"pid", "comm"}, rest...), nil
}

func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(c)
		if err != nil || len(f) < 4 {
			continue
		}
		if pp, _ := strconv.Atoi(f[3]); pp == pid {
			out = append(out, c)
		}
	}
	return out
}

// memory is pid's peak and current resident size in MiB (VmHWM, VmRSS).
func memory(pid int) (peak, now float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmHWM":
			peak = kb / 1024
		case "VmRSS":
			now = kb / 1024
		}
	}
	return peak, now, nil
}
