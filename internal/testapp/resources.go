package testapp

import "time"

// The most CPU and memory an app can be told to use: one CPU, so a burner
// is one goroutine, and enough memory to fill a small container's limit.
const (
	MaxCPUMillicores = 1000
	MaxHoldBytes     = 256 << 20
)

// burnPeriod is what the burner divides its time in: busy for its share of
// each period, asleep for the rest. Far shorter than the kernel's CPU
// quota period (100ms), so a limit never throttles a share below it.
const burnPeriod = 10 * time.Millisecond

// useResources starts the burner when there is CPU to burn and it does not
// run, and replaces the memory held when its size changes. a.mu is held.
func (a *App) useResources() {
	if a.b.CPUMillicores > 0 && !a.burning {
		a.burning = true
		go a.burn()
	}
	if int64(len(a.held)) != a.b.HoldBytes {
		a.held = nil // the old block can go before the new one is made
		a.held = hold(a.b.HoldBytes)
	}
}

// burn spins for the CPU share the behaviour sets in every burnPeriod, and
// returns once it is 0. The periods follow each other on a schedule, so
// that sleeping late does not lower the share; one late by a whole period
// (a busy machine) starts the schedule again.
func (a *App) burn() {
	start := time.Now()
	for {
		a.mu.Lock()
		m := a.b.CPUMillicores
		if m <= 0 {
			a.burning = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		busy := burnPeriod * time.Duration(m) / 1000
		for time.Since(start) < busy {
			// Spin: the point is to use the CPU.
		}
		start = start.Add(burnPeriod)
		time.Sleep(time.Until(start))
		if time.Since(start) > burnPeriod {
			start = time.Now()
		}
	}
}

// hold returns n bytes with every page written: memory the kernel counts
// as used, not merely promised.
func hold(n int64) []byte {
	if n <= 0 {
		return nil
	}
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}
