//go:build !race

package gitops

const raceEnabled = false
