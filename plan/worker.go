package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// init turns this process into a CUE worker when its parent asked for one
// (see sandbox.go). It runs before main, and before a test binary's
// TestMain, so that a worker never runs the program it was started from.
func init() {
	if config, ok := os.LookupEnv(workerEnv); ok {
		os.Exit(serveWorker(config))
	}
}

// serveWorker checks the files its parent sends, one at a time, within the
// limits in config, and returns when the parent closes its requests.
//
// Its memory is bounded twice: a watchdog exits (exitOverMemory) when the
// Go runtime holds more than CUEMemory over what the worker held once
// ready, checked every few milliseconds; and, on Linux, the kernel refuses
// the worker address space beyond that plus a margin (RLIMIT_AS), which
// makes the runtime die of "out of memory" when an allocation outruns the
// watchdog. Its CPU time is bounded too (RLIMIT_CPU), so that a worker
// whose parent died without killing it stops by itself.
func serveWorker(config string) int {
	os.Unsetenv(workerEnv)
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "hal9-migrate CUE worker: %v\n", err)
		return 1
	}
	var l Limits
	if err := json.Unmarshal([]byte(config), &l); err != nil {
		return fail(fmt.Errorf("read limits: %w", err))
	}
	requests, replies := os.NewFile(3, "requests"), os.NewFile(4, "replies")
	for _, f := range []*os.File{requests, replies} {
		if _, err := f.Stat(); err != nil {
			return fail(fmt.Errorf("%s is set, but no parent opened %s for it: %w", workerEnv, f.Name(), err))
		}
	}
	v, err := NewValidator(WithLimits(l), evaluateHere())
	if err != nil {
		return fail(err)
	}

	budget := uint64(l.withDefaults().CUEMemory)
	base := goMemory()
	debug.SetMemoryLimit(int64(base + budget))
	// The kernel's limit is a backstop for what outruns the watchdog: a
	// quarter more, and room for the stacks of new threads (8 MiB each
	// with cgo).
	if err := limitMemory(budget + budget/4 + 64<<20); err != nil {
		return fail(fmt.Errorf("limit memory: %w", err))
	}
	go watchMemory(base + budget)

	enc, dec := json.NewEncoder(replies), json.NewDecoder(requests)
	if err := enc.Encode(workReply{Ready: workerProtocol}); err != nil {
		return fail(err)
	}
	for {
		var req workRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			return fail(fmt.Errorf("read request: %w", err))
		}
		if err := limitCPU(l.withDefaults().CUETimeout); err != nil {
			return fail(fmt.Errorf("limit CPU time: %w", err))
		}
		p, skipped, errs := v.check(Source{Path: req.Path, Data: req.Data, Discovered: req.Discovered})
		r := workReply{Plan: p, Skipped: skipped, Errors: errs}
		if p != nil {
			r.Positions = p.positions
		}
		if err := enc.Encode(r); err != nil {
			return fail(fmt.Errorf("write reply: %w", err))
		}
	}
}

// evaluateHere makes a Validator evaluate CUE in its own process: the
// worker's.
func evaluateHere() ValidatorOption {
	return func(v *Validator) { v.local = true }
}

// goMemory is the memory the Go runtime holds from the system: what
// SetMemoryLimit bounds.
func goMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// watchMemory exits the process once it holds more than max. Memory the
// runtime holds but no longer uses (a grown stack's old copy, a freed
// heap the background scavenger has not returned yet, which on a busy
// machine it is slow to) is returned first, so that only memory in use
// counts.
func watchMemory(max uint64) {
	for range time.Tick(5 * time.Millisecond) {
		if goMemory() <= max {
			continue
		}
		debug.FreeOSMemory()
		if m := goMemory(); m > max {
			fmt.Fprintf(os.Stderr, "hal9-migrate CUE worker: %d MiB of memory is over its budget\n", m>>20)
			os.Exit(exitOverMemory)
		}
	}
}
