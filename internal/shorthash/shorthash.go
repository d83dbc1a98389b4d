// Package shorthash abbreviates commit hashes the one way the project
// prints them: in logs, status files, commit messages and the command
// line, a commit is always named by the same 12 characters.
package shorthash

// Len is how many characters of a hash are printed.
const Len = 12

// Of returns the first Len characters of the hexadecimal hash h, or h
// whole when it is shorter (an empty or abbreviated one).
func Of(h string) string {
	if len(h) > Len {
		return h[:Len]
	}
	return h
}
