// Command hal9-migrate moves a running service from one implementation to
// another in phases, driven by plan files kept in Git.
//
// This package holds the cobra commands only: each parses its flags, calls
// the packages that do the work, and prints. Errors are printed once, by Main.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() { os.Exit(Main()) }

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and found a problem, or could not run
	exitUsage   = 2 // the command line is wrong
)

// errReported is returned by a command that has already printed why it
// failed (vet's list of errors, say): Main exits 1 without printing more.
var errReported = errors.New("failure already reported")

// usageError is a mistake in the command line: an unknown command or flag, a
// bad flag value, the wrong number of arguments. Main exits 2 on it.
type usageError struct {
	err error
	// command is the path of the command whose usage was wrong, for the
	// hint that points at its help.
	command string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// Main runs the command line in os.Args and returns the process exit code.
func Main() int {
	root := newRootCmd()
	_, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errReported) {
		return exitFailure
	}
	stderr := root.ErrOrStderr()
	fmt.Fprintf(stderr, "hal9-migrate: %v\n", err)
	if ue, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.command)
		return exitUsage
	}
	return exitFailure
}
