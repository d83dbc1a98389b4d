package plan

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// workerProcAttr kills a worker when its parent dies.
func workerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// limitMemory makes the kernel refuse the process more address space than
// it has now plus extra (RLIMIT_AS). The Go runtime reserves address space
// for its heap in 64 MiB arenas before it uses them, so a heap that grows
// past the limit fails at its next reservation, and the runtime dies of
// "out of memory". RLIMIT_DATA, which counts only writable memory, does
// not hold a Go heap: the runtime makes its reservations writable with
// mmap(MAP_FIXED) over them, which the kernel does not count as growth
// (a worker measured at 664 MB of VmData under a 452 MB RLIMIT_DATA).
func limitMemory(extra uint64) error {
	now, err := statusBytes("VmSize")
	if err != nil {
		return err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err != nil {
		return err
	}
	lim.Cur = min(now+extra, lim.Max)
	lim.Max = lim.Cur
	return syscall.Setrlimit(syscall.RLIMIT_AS, &lim)
}

// statusBytes reads a size field (VmSize, VmData) of /proc/self/status.
func statusBytes(field string) (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(field+":")); ok {
			f := bytes.Fields(rest)
			if len(f) == 2 && string(f[1]) == "kB" {
				kb, err := strconv.ParseUint(string(f[0]), 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

var watchCPU sync.Once

// limitCPU lets the process use d more CPU time for each of its threads
// that can run at once, and a second more, then has the kernel signal it
// (RLIMIT_CPU), upon which it exits. Its parent kills it at the deadline
// long before; this stops a worker whose parent is gone.
func limitCPU(d time.Duration) error {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	allowed := used + d*time.Duration(runtime.GOMAXPROCS(0)+1) + time.Second
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CPU, &lim); err != nil {
		return err
	}
	lim.Cur = min(uint64(allowed/time.Second)+1, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &lim); err != nil {
		return err
	}
	watchCPU.Do(func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGXCPU)
		go func() {
			<-c
			fmt.Fprintln(os.Stderr, "hal9-migrate CUE worker: over its CPU time")
			os.Exit(exitOverCPU)
		}()
	})
	return nil
}
