package gitops

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// The sentinels callers branch on. Every error from Repo that comes from the
// remote wraps at most one of them; an error that wraps none is neither
// retryable nor a configuration problem this package could name (a hook
// that declined the push, a corrupt pack).
var (
	// ErrNonFastForward means the branch moved between the fetch a change
	// was built on and the push: someone else pushed first. Commit handles
	// it by rebuilding its change on the new head; it reaches callers only
	// when every retry lost the race.
	ErrNonFastForward = errors.New("non-fast-forward: the branch moved")
	// ErrAuth means the credentials were refused or missing, or the server
	// could not be authenticated (an unknown SSH host key, an untrusted TLS
	// certificate).
	ErrAuth = errors.New("authentication failed")
	// ErrNotFound means the repository or the branch does not exist, or the
	// repository is empty.
	ErrNotFound = errors.New("not found")
	// ErrNetwork means the server could not be reached or the connection
	// broke: retrying later may help.
	ErrNetwork = errors.New("network error")
	// ErrNoRepository means OpenBranch found no git repository at or
	// around the directory it was given: the command runs outside a
	// clone, and no URL names one.
	ErrNoRepository = errors.New("repository does not exist")
	// ErrTooLarge means a file of the repository is larger than
	// Options.MaxFileBytes: it was not read.
	ErrTooLarge = errors.New("file too large")
)

// kindError is an error whose kind (one of the sentinels, or nil) was found
// by classify. Its text is the original error's text; the original error
// itself is not kept, so go-git's types do not leak to callers.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string {
	if e.kind == nil {
		return e.msg
	}
	return e.kind.Error() + ": " + e.msg
}

func (e *kindError) Unwrap() error { return e.kind }

// classify sorts an error from go-git (or from the server, relayed by
// go-git as plain text) into one of the sentinels. It is the one place that
// knows go-git's and git servers' error strings; see errors_test.go for the
// strings it was written against, most of them captured from real servers.
// A nil error stays nil, and an error already classified is returned as is.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ke *kindError
	if errors.As(err, &ke) {
		return err
	}
	return &kindError{kind: kindOf(err), msg: err.Error()}
}

func kindOf(err error) error {
	msg := strings.ToLower(err.Error())
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(msg, s) {
				return true
			}
		}
		return false
	}

	// Not found comes first: git daemon answers a missing repository with
	// "access denied or repository not exported", which must not read as
	// an authentication failure.
	switch {
	case errors.Is(err, transport.ErrRepositoryNotFound),
		errors.Is(err, transport.ErrEmptyRemoteRepository),
		errors.Is(err, git.NoMatchingRefSpecError{}),
		has("repository not found", // go-git, GitHub, git daemon via go-git
			"remote repository is empty",             // go-git: no refs at all
			"couldn't find remote ref",               // go-git fetch of a missing branch
			"does not appear to be a git repository", // git, local paths
			"no such repository",                     // git daemon
			"repository not exported",                // git daemon
			"repository does not exist",              // Bitbucket
			"could not be found",                     // GitLab
			"but is absent"):                         // go-git RequireRemoteRefs: branch deleted
		return ErrNotFound

	case errors.Is(err, transport.ErrAuthenticationRequired),
		errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod),
		has("authentication required", // go-git, HTTP 401
			"authorization failed",   // go-git, HTTP 403
			"unable to authenticate", // x/crypto/ssh: key refused
			"permission denied",      // ssh servers
			"knownhosts:",            // unknown or changed SSH host key
			"host key",               // ssh: host key mismatch, no host key callback
			"x509:",                  // untrusted or invalid TLS certificate
			"tls: failed to verify"):
		return ErrAuth

	case errors.Is(err, git.ErrForceNeeded),
		has("non-fast-forward", // go-git client check, git receive-pack with denyNonFastForwards, git CLI
			"fetch first",          // git CLI, GitHub: the remote has commits we do not
			"stale info",           // git CLI --force-with-lease
			"failed to update ref", // git receive-pack: the ref moved after it was advertised
			"failed to lock",       // older git receive-pack, same race
			"cannot lock ref",      // git's ref transaction, same race (stderr)
			"but expected",         // "is at X but expected Y", same race
			"incorrect old value",  // the ref's old value did not match
			"required to be"):      // go-git RequireRemoteRefs: the branch is elsewhere
		return ErrNonFastForward
	}

	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.EOF),
		has("connection refused",
			"connection reset",
			"broken pipe",
			"no such host",
			"network is unreachable",
			"no route to host",
			"i/o timeout",
			"timeout exceeded", // go-git waiting for the server's first line
			"tls handshake timeout",
			"unexpected eof",
			"connection closed",
			"use of closed network connection"):
		return ErrNetwork
	}
	return nil
}
