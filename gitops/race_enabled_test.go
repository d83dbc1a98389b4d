//go:build race

package gitops

// raceEnabled reports a -race build, whose runtime doubles the memory
// footprint: memory limits are not checked there.
const raceEnabled = true
