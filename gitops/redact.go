package gitops

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// redacted is what Redact puts in place of a secret.
const redacted = "xxxxx"

// Redact returns a repository URL as it may be shown in logs and errors:
// the password of its user information, the user itself where it may be a
// token, and the values of its query replaced by "xxxxx". It works on any
// string, also one that does not parse as a URL (a password in a URL that
// fails to parse is redacted all the same), and leaves local paths and
// scp-like addresses (git@host:path) as they are, unless the user part of
// the latter carries a password ("user:pw@host:path").
//
// Over http and https a user without a password is redacted too: GitHub and
// others accept an access token as the user name
// (https://TOKEN@github.com/org/repo), and no user name is worth that risk.
func Redact(raw string) string {
	u, ok := parseURL(raw)
	if !ok {
		return redactUnparsed(raw)
	}
	if u.User != nil {
		name := u.User.Username()
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(name, redacted)
		} else if tokenUser(u.Scheme) && name != "" {
			u.User = url.User(redacted)
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	// url.URL.String escapes the "x"s of a redacted password as they are,
	// and keeps the rest of the URL as it was given.
	return u.String()
}

// parseURL parses raw when it is a URL with a scheme ("scheme://..."). It
// reports false for paths, scp-like addresses and anything url.Parse
// refuses.
func parseURL(raw string) (*url.URL, bool) {
	if !strings.Contains(raw, "://") {
		return nil, false
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, false
	}
	return u, true
}

// tokenUser reports whether a user without a password in a URL of scheme
// may be a token.
func tokenUser(scheme string) bool {
	s := strings.ToLower(scheme)
	return s == "http" || s == "https"
}

// redactQuery hides every value of a raw query, keeping the keys.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		if k, _, ok := strings.Cut(p, "="); ok {
			parts[i] = k + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

// urlParts splits a string that may be a URL, or a broken one, as far as
// secrets go: the user information (before the last "@" of the part after
// "scheme://" and before any "?" or "#") and the query. It assumes the worst
// of a string url.Parse refused: a "/" inside a password ends no user
// information here.
type urlParts struct {
	scheme    string
	userStart int // index of the user information in the string; -1 if none
	userEnd   int // index of the "@" that ends it
	query     string
	queryAt   int // index of the query (after "?"); -1 if none
}

func splitURL(raw string) urlParts {
	p := urlParts{userStart: -1, queryAt: -1}
	scheme, rest, ok := strings.Cut(raw, "://")
	start := len(scheme) + len("://")
	if !ok {
		// scp-like: user@host:path, where a user with a ":" holds a
		// password. A "/" before the "@" makes it a path.
		at := strings.Index(raw, "@")
		if at <= 0 || strings.ContainsAny(raw[:at], "/\\") {
			return p
		}
		p.userStart, p.userEnd = 0, at
		return p
	}
	p.scheme = scheme
	end := len(rest)
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		end = i
		if rest[i] == '?' {
			q := rest[i+1:]
			if j := strings.IndexByte(q, '#'); j >= 0 {
				q = q[:j]
			}
			p.query, p.queryAt = q, start+i+1
		}
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		p.userStart, p.userEnd = start, start+at
	}
	return p
}

// redactUnparsed hides the secrets of a string url.Parse refused (or of an
// scp-like address), by its shape alone.
func redactUnparsed(raw string) string {
	p := splitURL(raw)
	if p.scheme == "" && p.userStart < 0 {
		return raw // a path, or an scp-like address without a password
	}
	var b strings.Builder
	next := 0
	if p.userStart >= 0 {
		info := raw[p.userStart:p.userEnd]
		b.WriteString(raw[:p.userStart])
		switch name, _, hasPassword := strings.Cut(info, ":"); {
		case hasPassword:
			b.WriteString(name + ":" + redacted)
		case p.scheme == "" || !tokenUser(p.scheme):
			b.WriteString(info)
		default:
			b.WriteString(redacted)
		}
		next = p.userEnd
	}
	if p.queryAt >= 0 {
		b.WriteString(raw[next:p.queryAt])
		b.WriteString(redactQuery(p.query))
		next = p.queryAt + len(p.query)
	}
	b.WriteString(raw[next:])
	return b.String()
}

// urlSecrets returns the strings of raw that Redact hides, each as written
// and decoded, so that they can be scrubbed from text that quotes the URL
// (an error from url.Parse, from go-git or from a server). Query values
// shorter than 6 bytes are left out: a token is longer, and scrubbing "1"
// or "main" out of every message would garble it.
func urlSecrets(raw string) []string {
	p := splitURL(raw)
	var out []string
	add := func(s string, min int) {
		if len(s) < min {
			return
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
		if d, err := url.QueryUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	if p.userStart >= 0 {
		info := raw[p.userStart:p.userEnd]
		if name, pw, ok := strings.Cut(info, ":"); ok {
			add(pw, 1)
		} else if p.scheme != "" && tokenUser(p.scheme) {
			add(name, 1)
		}
	}
	if p.queryAt >= 0 {
		for _, kv := range strings.Split(p.query, "&") {
			if _, v, ok := strings.Cut(kv, "="); ok {
				add(v, 6)
			}
		}
	}
	// Longest first, so that a secret that contains another is replaced
	// whole.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// scrubURL replaces the secrets of raw in s.
func scrubURL(s, raw string) string {
	for _, secret := range urlSecrets(raw) {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	return s
}

// parseEndpoint is transport.NewEndpoint with errors that never quote a
// secret of raw: url.Parse's errors quote the whole URL ("parse
// \"https://user:pw@[::1/r.git\": missing ']' in host").
func parseEndpoint(raw string) (*transport.Endpoint, error) {
	ep, err := transport.NewEndpoint(raw)
	if err == nil {
		return ep, nil
	}
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		msg = ue.Err.Error() // the reason, without the URL
	}
	var ee url.EscapeError
	if errors.As(err, &ee) {
		// It quotes the bad escape, which may be part of a password.
		msg = "invalid URL escape: a % not followed by two hexadecimal digits"
	}
	return nil, fmt.Errorf("invalid URL %s: %s", Redact(raw), scrubURL(msg, raw))
}

// String shows the options with the URL redacted, so that logging them
// shows no password.
func (o Options) String() string {
	type plain Options // without the methods, or Sprintf would call String
	o.URL = Redact(o.URL)
	return fmt.Sprintf("%+v", plain(o))
}

// GoString redacts like String, for %#v.
func (o Options) GoString() string {
	type plain Options
	o.URL = Redact(o.URL)
	return "gitops.Options" + strings.TrimPrefix(fmt.Sprintf("%#v", plain(o)), "gitops.plain")
}

// String shows the options with the repository URL redacted.
func (o BranchOptions) String() string {
	type plain BranchOptions
	o.Repo = Redact(o.Repo)
	return fmt.Sprintf("%+v", plain(o))
}

// GoString redacts like String, for %#v.
func (o BranchOptions) GoString() string {
	type plain BranchOptions
	o.Repo = Redact(o.Repo)
	return "gitops.BranchOptions" + strings.TrimPrefix(fmt.Sprintf("%#v", plain(o)), "gitops.plain")
}
