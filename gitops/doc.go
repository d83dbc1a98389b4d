// Package gitops is the Git side of hal9-migrate: it reads migration plans
// from a repository and writes the daemon's status files and rollbacks back
// to it.
//
// ReadPlans reads the plan files of a local repository at any revision, as
// `plan diff` compares them with the working tree. Repo tracks one branch of
// one remote repository for the daemon: Head is the cheap poll that lists
// the remote's refs, Sync fetches the branch head when it moved and returns
// its plan files, and Commit writes a change on top of the head and pushes
// it, rebasing the change onto a new head and retrying when someone else
// pushed first. It never force-pushes.
//
// go-git stays inside this package: callers see Hash, Snapshot, plan.Source
// values and errors that wrap this package's sentinels (ErrNonFastForward,
// ErrAuth, ErrNotFound, ErrNetwork). It does not validate plans, that is
// package plan's job, and it does not decide when to commit, that is the
// reconciler's.
package gitops
