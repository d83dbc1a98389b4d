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

// limitMemory makes the kernel refuse the process more private memory
// than it has now plus extra (RLIMIT_DATA, which counts what a process can
// write to, not the address space Go reserves and never touches).
func limitMemory(extra uint64) error {
	now, err := dataSize()
	if err != nil {
		return err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_DATA, &lim); err != nil {
		return err
	}
	lim.Cur = min(now+extra, lim.Max)
	lim.Max = lim.Cur
	return syscall.Setrlimit(syscall.RLIMIT_DATA, &lim)
}

// dataSize is the process's private writable memory, VmData in
// /proc/self/status.
func dataSize() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmData:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 2 && string(f[1]) == "kB" {
				kb, err := strconv.ParseUint(string(f[0]), 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmData in /proc/self/status")
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
