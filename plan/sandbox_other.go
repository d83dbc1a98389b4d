//go:build !linux

package plan

import (
	"syscall"
	"time"
)

// Outside Linux a worker is bounded by its parent's deadline and its own
// memory watchdog only.

func workerProcAttr() *syscall.SysProcAttr { return nil }

func limitMemory(extra uint64) error { return nil }

func limitCPU(d time.Duration) error { return nil }
