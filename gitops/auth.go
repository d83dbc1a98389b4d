package gitops

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// Auth holds the credentials for the remote. Which fields apply depends on
// the URL's scheme; setting a field that does not apply is an error, so a
// credential never goes somewhere it was not meant for.
//
//   - ssh:// and scp-like (git@host:path) URLs need SSHKeyFile. The server's
//     host key is checked against KnownHostsFile or, when that is empty,
//     against the files go-git checks by default ($SSH_KNOWN_HOSTS, else
//     ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts). An unknown or
//     changed host key is an error wrapping ErrAuth; there is no way to turn
//     the check off. The SSH user is the URL's, else "git". The SSH agent is
//     not used: the daemon runs unattended.
//   - https:// URLs take an optional TokenFile. The token is sent with HTTP
//     basic auth, as the password of the user TokenUser ("git" when empty).
//     GitHub and GitLab accept a personal or fine-grained access token as
//     the password with any user name; Bitbucket wants the user
//     "x-token-auth" for repository access tokens and GitHub App
//     installation tokens are documented with "x-access-token": set
//     TokenUser for those. The file is read again for every operation, so a
//     rotated token (a Kubernetes Secret update) is picked up without a
//     restart. A token is sent over plain http:// only to a loopback host.
//   - file://, local paths and git:// take no credentials.
//
// Secrets (the token, the passphrase, a password in the URL) never appear in
// errors; String redacts them.
type Auth struct {
	// SSHKeyFile is a private key file (PEM or OpenSSH format).
	SSHKeyFile string
	// SSHKeyPassphrase decrypts SSHKeyFile when it is encrypted.
	SSHKeyPassphrase string
	// KnownHostsFile is an OpenSSH known_hosts file listing the server's
	// host keys.
	KnownHostsFile string
	// TokenFile is a file holding an HTTPS access token; surrounding white
	// space is ignored.
	TokenFile string
	// TokenUser is the basic-auth user the token is sent with; "git" when
	// empty.
	TokenUser string
}

// String describes the credentials without revealing them.
func (a Auth) String() string {
	var parts []string
	if a.SSHKeyFile != "" {
		s := "ssh key " + a.SSHKeyFile
		if a.SSHKeyPassphrase != "" {
			s += " (with passphrase)"
		}
		parts = append(parts, s)
	}
	if a.KnownHostsFile != "" {
		parts = append(parts, "known_hosts "+a.KnownHostsFile)
	}
	if a.TokenFile != "" {
		parts = append(parts, "token file "+a.TokenFile)
	}
	if len(parts) == 0 {
		return "no credentials"
	}
	return strings.Join(parts, ", ")
}

// GoString redacts like String, so that %#v of an Options does not print
// the passphrase either.
func (a Auth) GoString() string { return "gitops.Auth{" + a.String() + "}" }

// credentials produces the go-git auth method for each operation and
// remembers the secrets it handled, so that they can be scrubbed from
// errors.
type credentials struct {
	method func() (transport.AuthMethod, error)

	mu      sync.Mutex
	secrets []string
}

func (c *credentials) auth() (transport.AuthMethod, error) {
	if c.method == nil {
		return nil, nil
	}
	return c.method()
}

func (c *credentials) remember(secret string) {
	if secret == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Contains(c.secrets, secret) {
		return
	}
	c.secrets = append(c.secrets, secret)
	// Longest first, so that a secret that contains another is replaced
	// whole.
	slices.SortStableFunc(c.secrets, func(a, b string) int { return len(b) - len(a) })
}

// scrub replaces every secret this Repo has handled in s.
func (c *credentials) scrub(s string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, secret := range c.secrets {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	return s
}

// newCredentials checks that a fits the endpoint's scheme and prepares the
// auth method. raw is the URL the endpoint was parsed from: its secrets are
// remembered as written and as decoded.
func newCredentials(raw string, ep *transport.Endpoint, a Auth) (*credentials, error) {
	c := &credentials{}
	c.remember(ep.Password)
	for _, s := range urlSecrets(raw) {
		c.remember(s)
	}
	c.remember(a.SSHKeyPassphrase)

	ssh := a.SSHKeyFile != "" || a.SSHKeyPassphrase != "" || a.KnownHostsFile != ""
	token := a.TokenFile != "" || a.TokenUser != ""
	switch ep.Protocol {
	case "ssh":
		if token {
			return nil, errors.New("a token file is for https URLs, not ssh")
		}
		if a.SSHKeyFile == "" {
			return nil, errors.New("an ssh URL needs an SSH key file")
		}
		m, err := sshAuth(ep, a)
		if err != nil {
			return nil, err
		}
		c.method = func() (transport.AuthMethod, error) { return m, nil }
	case "https", "http":
		if ssh {
			return nil, fmt.Errorf("an SSH key or known_hosts file is for ssh URLs, not %s", ep.Protocol)
		}
		if a.TokenFile == "" {
			break
		}
		if ep.Protocol == "http" && !loopback(ep.Host) {
			return nil, fmt.Errorf("refusing to send a token over plain http to %s: use https", ep.Host)
		}
		user := a.TokenUser
		if user == "" {
			user = "git"
		}
		if _, err := readToken(a.TokenFile); err != nil {
			return nil, err
		}
		c.method = func() (transport.AuthMethod, error) {
			token, err := readToken(a.TokenFile)
			if err != nil {
				return nil, err
			}
			c.remember(token)
			return &githttp.BasicAuth{Username: user, Password: token}, nil
		}
	default:
		if ssh || token {
			return nil, fmt.Errorf("%s URLs take no credentials", ep.Protocol)
		}
	}
	return c, nil
}

func readToken(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		// The error names the file, never its content.
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := string(bytes.TrimSpace(data))
	if token == "" {
		return "", fmt.Errorf("read token file %s: the file is empty", file)
	}
	if strings.ContainsAny(token, "\r\n") {
		return "", fmt.Errorf("read token file %s: the token spans several lines", file)
	}
	return token, nil
}

// sshAuth reads the key once (an encrypted key can take a second to
// decrypt) and builds the host key check from the known_hosts files.
func sshAuth(ep *transport.Endpoint, a Auth) (*gitssh.PublicKeys, error) {
	user := ep.User
	if user == "" {
		user = "git"
	}
	pemBytes, err := os.ReadFile(a.SSHKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read ssh key: %w", err)
	}
	var missing *ssh.PassphraseMissingError
	if _, err := ssh.ParsePrivateKey(pemBytes); errors.As(err, &missing) && a.SSHKeyPassphrase == "" {
		return nil, fmt.Errorf("read ssh key %s: it is encrypted and no passphrase was given", a.SSHKeyFile)
	}
	key, err := gitssh.NewPublicKeys(user, pemBytes, a.SSHKeyPassphrase)
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) {
			return nil, fmt.Errorf("read ssh key %s: wrong passphrase", a.SSHKeyFile)
		}
		// x/crypto/ssh's errors describe the key's format, never the
		// passphrase; %v keeps its types out of callers' reach.
		return nil, fmt.Errorf("read ssh key %s: %v", a.SSHKeyFile, err)
	}
	callback, algorithms, err := hostKeyCheck(a.KnownHostsFile, hostPort(ep))
	if err != nil {
		return nil, err
	}
	key.HostKeyCallback = callback
	key.HostKeyAlgorithms = algorithms
	return key, nil
}

// hostKeyCheck builds the callback that accepts only the host keys listed
// for the server in the known_hosts file (or go-git's default files when
// file is empty), and the host key algorithms to offer: those of the listed
// keys, so that a server holding several keys presents one we can check.
func hostKeyCheck(file, hostPort string) (ssh.HostKeyCallback, []string, error) {
	var files []string
	if file != "" {
		if _, err := os.Stat(file); err != nil {
			return nil, nil, fmt.Errorf("read known_hosts: %w", err)
		}
		files = append(files, file)
	}
	db, err := gitssh.NewKnownHostsDb(files...)
	if err != nil {
		return nil, nil, fmt.Errorf("read known_hosts: %v", err)
	}
	return db.HostKeyCallback(), db.HostKeyAlgorithms(hostPort), nil
}

func hostPort(ep *transport.Endpoint) string {
	port := ep.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(strings.Trim(ep.Host, "[]"), strconv.Itoa(port))
}

func loopback(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
